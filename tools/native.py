"""Compile Corral's request-path modules with mypyc, in place: `python tools/native.py build`.

Rule: the modules are those pyproject's ``[tool.corral.native]`` lists. ``build`` compiles them
with the project's own mypy configuration (mypy --strict must pass, or nothing is built), puts
each extension next to its source (and the shared runtime in ``corral/_native__mypyc*``) in
place of any earlier build, and writes ``corral/native.json``: the SHA-256 of every source it
compiled, which ``corral.native.check`` holds the sources to from then on. It compiles a copy of
the package under ``build/native`` and swaps the result in at the end, so a failed or running
build never leaves a half-built package. ``clean`` removes the build, and everything runs
interpreted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from corral.native import MANIFEST_NAME, extensions

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "corral"
MANIFEST = PACKAGE / MANIFEST_NAME
BUILD_DIR = ROOT / "build" / "native"
GROUP = "corral._native"

_SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify

paths = sys.argv[1:]
setup(
    name="corral-native",
    packages=[],
    py_modules=[],
    ext_modules=mypycify(paths, opt_level="3", group_name={group!r}, target_dir={target!r}),
    script_args=["build_ext", "--inplace", "--parallel", {jobs!r}, "--build-temp", {temp!r}],
)
"""


def modules() -> list[str]:
    """The listed sources, as paths relative to the repository root."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = config["tool"]["corral"]["native"]["modules"]
    for path in listed:
        if not (ROOT / path).is_file():
            raise SystemExit(f"[tool.corral.native] lists {path}, which does not exist")
    return list(listed)


def _digests(root: Path, sources: list[str]) -> dict[str, str]:
    """Each source's module name and the SHA-256 of its text under ``root``."""
    return {
        path.removesuffix(".py").replace("/", "."): hashlib.sha256(
            (root / path).read_bytes()
        ).hexdigest()
        for path in sources
    }


def _remove_build() -> None:
    for path in extensions(PACKAGE):
        path.unlink()
    MANIFEST.unlink(missing_ok=True)


def clean() -> None:
    _remove_build()
    shutil.rmtree(BUILD_DIR, ignore_errors=True)


def build() -> None:
    """Compile a copy of the package, then swap the result in: the build in place, if any,
    stays whole until the new one is ready, and a failed build changes nothing."""
    sources = modules()
    shutil.rmtree(BUILD_DIR, ignore_errors=True)
    stage = BUILD_DIR / "stage"
    shutil.copytree(
        PACKAGE,
        stage / "corral",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", MANIFEST_NAME, "__pycache__"),
    )
    shutil.copy2(ROOT / "pyproject.toml", stage / "pyproject.toml")
    digests = _digests(stage, sources)
    setup = _SETUP.format(
        group=GROUP,
        target=str(BUILD_DIR / "c"),
        jobs=str(os.cpu_count() or 1),
        temp=str(BUILD_DIR / "temp"),
    )
    done = subprocess.run(
        [sys.executable, "-c", setup, *sources], cwd=stage, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-20000:] + done.stderr[-20000:])
        raise SystemExit(f"compiling failed (exit {done.returncode}); nothing was changed")
    built = extensions(stage / "corral")
    _remove_build()
    for path in built:
        shutil.move(path, PACKAGE / path.relative_to(stage / "corral"))
    manifest = {"python": sys.implementation.cache_tag, "modules": digests}
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"compiled {len(sources)} modules into {len(built)} extension files")


def main(argv: list[str]) -> None:
    commands = {"build": build, "clean": clean}
    if len(argv) != 1 or argv[0] not in commands:
        raise SystemExit("usage: python tools/native.py build|clean")
    commands[argv[0]]()


if __name__ == "__main__":
    main(sys.argv[1:])
