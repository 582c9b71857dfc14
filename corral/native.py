"""Which of Corral's modules run compiled, and the guard against running stale compiled code.

Rule: `make native` (tools/native.py) compiles the request-path modules with mypyc, in place, and
writes ``native.json``: the SHA-256 of each source it compiled. Python imports a compiled module
in preference to its source, so a source edited after the build would silently not run; `check`
refuses that, and every `corral` command calls it first. Compiled files without that record are
refused the same way. With neither, everything runs interpreted: the same behaviour, more CPU.

What compiled modules may not do: suspend while an exception is being handled (an ``await``,
``async for`` or ``async with`` in an ``except`` or ``finally`` block, or an ``async with`` whose
exit may suspend; ``asyncio.timeout`` does not). A compiled coroutine suspended there leaves the
exception set for whatever the event loop runs next, and a compiled ``finally`` that awaits then
raises that stranger's exception. tests/packaging/test_native.py holds the listed modules to it.

What they should not do: build a class per request whose ``__init__`` ``dataclasses``
generated. That ``__init__`` is Python compiled at import and runs interpreted; such classes are
``@dataclass(init=False)`` with an ``__init__`` of their own (the test lists them).
"""

from __future__ import annotations

import hashlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
MANIFEST_NAME = "native.json"
REBUILD = "run `make native` to rebuild them, or `python tools/native.py clean` to run interpreted"


class StaleBuildError(Exception):
    """Compiled modules that do not match their sources."""


def extensions(package: Path) -> list[Path]:
    """Every compiled file under a package."""
    return sorted(p for pattern in ("*.so", "*.pyd") for p in package.rglob(pattern))


def check(package: Path = PACKAGE) -> list[str]:
    """The modules that run compiled (none when there is no build); `StaleBuildError` naming
    the modules whose source changed since they were compiled."""
    manifest = package / MANIFEST_NAME
    if not manifest.exists():
        found = extensions(package)
        if found:
            names = ", ".join(str(p.relative_to(package.parent)) for p in found[:3])
            raise StaleBuildError(
                f"compiled files with no record of their sources ({names}, ...): {REBUILD}"
            )
        return []
    try:
        document = json.loads(manifest.read_text())
        recorded = document["modules"]
        built_for = str(document.get("python", "another Python"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StaleBuildError(f"{manifest} is unreadable ({exc}): {REBUILD}") from None
    stale, missing = [], []
    for module, digest in sorted(recorded.items()):
        base = package.parent / module.replace(".", "/")
        try:
            current = hashlib.sha256(base.with_suffix(".py").read_bytes()).hexdigest()
        except OSError:
            current = None
        if current != digest:
            stale.append(module)
        if not any(base.with_name(base.name + suffix).exists() for suffix in EXTENSION_SUFFIXES):
            missing.append(module)
    if stale:
        raise StaleBuildError(
            f"{', '.join(stale)} changed since they were compiled, and would run as they were: "
            f"{REBUILD}"
        )
    if missing:
        raise StaleBuildError(
            f"{', '.join(missing)} have no compiled file this Python loads "
            f"(built for {built_for}?): {REBUILD}"
        )
    return sorted(recorded)


def describe(package: Path = PACKAGE) -> str:
    """One line for a process's start-up log."""
    compiled = check(package)
    if not compiled:
        return "interpreted (no compiled modules: `make native` builds them)"
    return f"{len(compiled)} request-path modules compiled with mypyc"
