"""A small Dockerfile reader for the packaging tests: instructions, stages, build arguments.

Rule: parsing only (line continuations, comments, `ARG` defaults substituted into `FROM`); it
understands what Corral's Dockerfiles use and nothing more, so a test fails loudly on anything
it cannot read.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword (upper case) and the rest of the line, joined."""

    keyword: str
    value: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ENTRYPOINT/CMD, or None for shell form."""
        text = self.value.strip()
        if not text.startswith("["):
            return None
        parsed = json.loads(text)
        assert isinstance(parsed, list)
        return [str(item) for item in parsed]


@dataclass
class Stage:
    """One `FROM` and the instructions up to the next."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """Every `ENV key=value` of the stage (later ones win)."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.value):
                key, sep, value = word.partition("=")
                assert sep, f"ENV {instruction.value!r}: use the key=value form"
                values[key] = value
        return values


@dataclass
class Dockerfile:
    """A parsed Dockerfile."""

    path: Path
    args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage_names(self) -> set[str]:
        return {s.name for s in self.stages if s.name}

    def external_bases(self) -> list[str]:
        """Base images that are not earlier stages, with build arguments substituted."""
        return [s.base for s in self.stages if s.base not in self.stage_names()]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the file ends inside a line continuation"
    return [line for line in lines if line]


def _substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], text)


def parse(path: Path) -> Dockerfile:
    """Read `path` into stages; `ARG`s before the first `FROM` are substituted into bases."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = value.strip().partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = value.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(_substitute(words[0], args), name))
        else:
            assert stages, f"{path.name}: {keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, value.strip()))
    return Dockerfile(path, args, stages)
