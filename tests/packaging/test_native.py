"""The compiled request path: the tests run against it, and no stale build ever runs.

`make test` builds it (`make native`); these tests fail when pytest runs without that build,
since the rest of the suite would then test the interpreted code instead of what ships.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import FunctionType

import pytest

from corral import native

ROOT = Path(__file__).resolve().parents[2]
LISTED = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["corral"]["native"]["modules"]
SUFFIX = EXTENSION_SUFFIXES[0]


def _names() -> list[str]:
    return sorted(path.removesuffix(".py").replace("/", ".") for path in LISTED)


def test_every_listed_module_runs_compiled_here() -> None:
    assert native.check() == _names(), "run `make native` (make test does) before pytest"
    for name in _names():
        origin = importlib.import_module(name).__file__ or ""
        assert origin.endswith(tuple(EXTENSION_SUFFIXES)), f"{name} loads from {origin}"
    assert "compiled with mypyc" in native.describe()


PER_REQUEST = [
    ("corral.common.httpserver", "Request"),
    ("corral.common.httpserver", "Reply"),
    ("corral.common.httpserver", "StreamReply"),
    ("corral.mcp.jsonrpc", "Message"),
    ("corral.shim.audit", "AuditEvent"),
    ("corral.shim.authorize", "Verdict"),
    ("corral.shim.proxy", "Exchange"),
    ("corral.gateway.routing", "Call"),
    ("corral.gateway.routing", "Incoming"),
    ("corral.gateway.sessions", "SessionRef"),
]
"""Classes made for every request. A dataclass's generated ``__init__`` is Python source that
``dataclasses`` compiles at import, so it runs interpreted even in a compiled module; these
define their own (``@dataclass(init=False)``)."""


@pytest.mark.parametrize(("module", "name"), PER_REQUEST)
def test_classes_made_per_request_are_built_by_compiled_code(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert not isinstance(cls.__init__, FunctionType), f"{module}.{name}.__init__ is interpreted"


def _suspensions_while_handling(tree: ast.AST) -> list[int]:
    """Lines that may suspend a coroutine while an exception is handled (see corral.native)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncWith):
            timeouts = all(
                isinstance(item.context_expr, ast.Call)
                and ast.unparse(item.context_expr.func) == "asyncio.timeout"
                for item in node.items
            )
            if not timeouts:
                found.append(node.lineno)
        if isinstance(node, ast.Try | ast.TryStar):
            blocks = [*node.handlers, *node.finalbody]
            for block in blocks:
                for sub in ast.walk(block):
                    if isinstance(sub, ast.Await | ast.AsyncFor | ast.AsyncWith):
                        found.append(sub.lineno)
    return sorted(set(found))


def test_no_compiled_module_suspends_while_an_exception_is_handled() -> None:
    for path in LISTED:
        lines = _suspensions_while_handling(ast.parse((ROOT / path).read_text()))
        assert lines == [], f"{path}: lines {lines} (see corral/native.py)"


def test_the_suspension_check_finds_what_it_looks_for() -> None:
    source = """
async def f(pool, gate):
    try:
        await gate()
    except ValueError:
        await gate()
    finally:
        async for _ in gate():
            pass
    async with asyncio.timeout(1):
        await gate()
    async with pool.acquire():
        pass
"""
    assert _suspensions_while_handling(ast.parse(source)) == [6, 8, 12]


def _package(tmp_path: Path, sources: dict[str, bytes]) -> Path:
    package = tmp_path / "corral"
    for relative, text in sources.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
    return package


def _record(package: Path, modules: dict[str, bytes]) -> None:
    digests = {f"corral.{m}": hashlib.sha256(text).hexdigest() for m, text in modules.items()}
    (package / "native.json").write_text(json.dumps({"python": "x", "modules": digests}))


def test_no_build_runs_interpreted(tmp_path: Path) -> None:
    package = _package(tmp_path, {"a.py": b"A = 1\n"})
    assert native.check(package) == []
    assert native.describe(package).startswith("interpreted")


def test_a_build_matching_its_sources_is_accepted(tmp_path: Path) -> None:
    package = _package(tmp_path, {"a.py": b"A = 1\n", f"a{SUFFIX}": b"", "b/c.py": b"C = 2\n"})
    (package / "b" / f"c{SUFFIX}").write_bytes(b"")
    _record(package, {"a": b"A = 1\n", "b.c": b"C = 2\n"})
    assert native.check(package) == ["corral.a", "corral.b.c"]


def test_a_source_edited_after_the_build_is_refused(tmp_path: Path) -> None:
    package = _package(tmp_path, {"a.py": b"A = 1\n", f"a{SUFFIX}": b"", "b.py": b"B = 1\n"})
    (package / f"b{SUFFIX}").write_bytes(b"")
    _record(package, {"a": b"A = 1\n", "b": b"B = 0\n"})
    with pytest.raises(native.StaleBuildError, match=r"^corral\.b changed since") as caught:
        native.check(package)
    assert "make native" in str(caught.value)


def test_a_removed_source_is_refused(tmp_path: Path) -> None:
    package = _package(tmp_path, {f"a{SUFFIX}": b""})
    _record(package, {"a": b"A = 1\n"})
    with pytest.raises(native.StaleBuildError, match=r"corral\.a changed"):
        native.check(package)


def test_compiled_files_without_their_record_are_refused(tmp_path: Path) -> None:
    package = _package(tmp_path, {"a.py": b"A = 1\n", f"a{SUFFIX}": b""})
    with pytest.raises(native.StaleBuildError, match="no record of their sources"):
        native.check(package)


def test_a_build_for_another_python_is_refused(tmp_path: Path) -> None:
    package = _package(tmp_path, {"a.py": b"A = 1\n", "a.cpython-399-x86_64-linux-gnu.so": b""})
    _record(package, {"a": b"A = 1\n"})
    with pytest.raises(native.StaleBuildError, match="no compiled file this Python loads"):
        native.check(package)


def test_an_unreadable_record_is_refused(tmp_path: Path) -> None:
    package = _package(tmp_path, {"a.py": b"A = 1\n", "native.json": b"{not json"})
    with pytest.raises(native.StaleBuildError, match="unreadable"):
        native.check(package)


def test_the_command_refuses_to_start_on_a_stale_build(tmp_path: Path) -> None:
    copy = tmp_path / "corral"
    shutil.copytree(
        ROOT / "corral", copy, ignore=shutil.ignore_patterns("*.so", "native.json", "__pycache__")
    )
    (copy / "common" / f"ids{SUFFIX}").write_bytes(b"not a library")
    stale = {"corral.common.ids": hashlib.sha256(b"an older source").hexdigest()}
    (copy / "native.json").write_text(json.dumps({"python": "x", "modules": stale}))
    run = [sys.executable, "-c", "from corral.cli import main; main()", "--version"]
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "corral: corral.common.ids changed since they were compiled" in done.stderr
    (copy / "native.json").unlink()
    (copy / "common" / f"ids{SUFFIX}").unlink()
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "corral" in done.stdout


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _tree_copy(destination: Path) -> Path:
    """What a wheel is built from: the project's metadata and the package as built here."""
    for name in ("pyproject.toml", "README.md", "hatch_build.py"):
        shutil.copy2(ROOT / name, destination / name)
    shutil.copytree(
        ROOT / "corral", destination / "corral", ignore=shutil.ignore_patterns("__pycache__")
    )
    return destination


def _build_wheel(source: Path, out: Path) -> Path:
    from hatchling.builders.wheel import WheelBuilder

    built = list(WheelBuilder(str(source)).build(directory=str(out), versions=["standard"]))
    assert len(built) == 1
    return Path(built[0])


def test_a_wheel_with_compiled_modules_is_tagged_for_this_python_and_platform(
    tmp_path: Path,
) -> None:
    wheel = _build_wheel(_tree_copy(_fresh(tmp_path / "src")), tmp_path / "dist")
    interpreter = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert wheel.name.endswith(".whl")
    assert f"-{interpreter}-{interpreter}-linux_" in wheel.name, wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "corral/native.json" in names
    assert {f"{path.removesuffix('.py')}{SUFFIX}" for path in LISTED} <= names


def test_a_wheel_without_compiled_modules_is_pure(tmp_path: Path) -> None:
    source = _tree_copy(_fresh(tmp_path / "src"))
    for compiled in native.extensions(source / "corral"):
        compiled.unlink()
    (source / "corral" / "native.json").unlink()
    wheel = _build_wheel(source, tmp_path / "dist")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name


def test_a_stale_build_is_not_packaged(tmp_path: Path) -> None:
    source = _tree_copy(_fresh(tmp_path / "src"))
    edited = source / LISTED[0]
    edited.write_text(edited.read_text() + "\n# edited after the build\n")
    with pytest.raises(RuntimeError, match=r"not packaging this tree: .* changed since"):
        _build_wheel(source, tmp_path / "dist")
    assert not list((tmp_path / "dist").glob("*.whl"))
