"""The images' Dockerfiles: multi-stage, pinned bases, non-root numeric user, no build tools in
the final stage, PYTHONSAFEPATH=1, and an entry point that runs the right `corral` command.

This machine builds no images; `e2e/kind/run.sh` builds them where Docker exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.packaging.dockerfiles import Dockerfile, parse

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {
    "operator": {"operator", "gateway"},
    "shim": {"shim", "bridge"},
    "runner": {"bridge"},
}
BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|make|cmake|git|curl|wget|[\w.+-]+-dev)\b"
)
EXACT_TAG = re.compile(r"^[\w.\-/]+(:\d+)?(/[\w.\-]+)*:v?\d+\.\d+\.\d+[\w.\-]*$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _dockerfile(image: str) -> Dockerfile:
    return parse(ROOT / f"Dockerfile.{image}")


@pytest.fixture(params=sorted(IMAGES))
def image(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_multi_stage_with_the_install_outside_the_final_stage(image: str) -> None:
    dockerfile = _dockerfile(image)
    assert len(dockerfile.stages) >= 2, "build in one stage, copy the result into the final one"
    final = dockerfile.final
    assert not any("pip install" in run.value for run in final.all("RUN"))
    copied = " ".join(c.value for c in final.all("COPY"))
    assert "--from=build /opt/corral /opt/corral" in copied


def test_every_base_image_is_pinned_to_an_exact_version(image: str) -> None:
    bases = _dockerfile(image).external_bases()
    assert bases
    for base in bases:
        assert EXACT_TAG.match(base) or DIGEST.search(base), (
            f"{base}: pin an exact version tag (x.y.z) or a digest, never latest or a major"
        )


def test_final_stage_runs_as_a_numeric_non_root_user(image: str) -> None:
    users = _dockerfile(image).final.all("USER")
    assert users, "the final stage must set USER"
    user, _, group = users[-1].value.partition(":")
    assert user.isdigit(), f"USER {users[-1].value}: give a numeric user id"
    assert int(user) != 0, "USER 0 is root"
    assert not group or group.isdigit(), "give a numeric group id"
    assert group != "0", "group 0 is root's"


def test_final_stage_has_no_build_tools(image: str) -> None:
    final = _dockerfile(image).final
    for run in final.all("RUN"):
        assert "apt-get install" not in run.value, run.value
        assert "apk add" not in run.value, run.value
        assert not BUILD_TOOLS.search(run.value), f"build tool in the final stage: {run.value}"
    for copy in final.all("COPY"):
        assert not BUILD_TOOLS.search(copy.value.replace("/usr/local/lib/node_modules", "")), (
            copy.value
        )


def test_python_does_not_put_the_working_directory_on_sys_path(image: str) -> None:
    assert _dockerfile(image).final.env().get("PYTHONSAFEPATH") == "1"


def test_entry_point_runs_the_images_corral_commands(image: str) -> None:
    final = _dockerfile(image).final
    entrypoint = final.all("ENTRYPOINT")[-1].exec_form()
    assert entrypoint is not None, "ENTRYPOINT in exec form"
    assert entrypoint[0] == "corral"
    cmd = final.all("CMD")
    command = [*entrypoint[1:], *((cmd[-1].exec_form() or []) if cmd else [])]
    assert command, "ENTRYPOINT/CMD name no corral command"
    assert command[0] in IMAGES[image]
    assert "/opt/corral/bin" in final.env()["PATH"].split(":")[0]


def test_copied_sources_exist_and_the_context_is_narrowed(image: str) -> None:
    dockerfile = _dockerfile(image)
    ignore = (ROOT / f"Dockerfile.{image}.dockerignore").read_text().splitlines()
    assert "*" in ignore, "send only the package to the builder"
    assert "!corral/" in ignore
    copied = set()
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            if copy.value.startswith("--from"):
                continue
            *sources, _ = copy.value.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert f"!{source}" in ignore or f"!{source}/" in ignore, (
                    f"COPY {source}: the .dockerignore leaves it out of the build context"
                )
                copied.add(source)
    # pyproject's wheel build runs this hook; `pip install .` fails without it.
    assert "hatch_build.py" in copied


def test_runner_carries_python_node_uv_and_the_bridge() -> None:
    dockerfile = _dockerfile("runner")
    bases = " ".join(dockerfile.external_bases())
    for needed in ("python:", "node:", "astral-sh/uv:"):
        assert needed in bases
    final = dockerfile.final
    copied = " ".join(c.value for c in final.all("COPY"))
    assert "/usr/local/bin/node" in copied
    assert "/uvx" in copied
    env = final.env()
    assert env["HOME"].startswith("/tmp")
    assert env["UV_CACHE_DIR"].startswith("/tmp")
    assert env["npm_config_cache"].startswith("/tmp"), "root filesystem is read-only in pods"
    assert env["UV_PYTHON_DOWNLOADS"] == "never"


def test_the_parser_reads_continuations_and_substitutes_build_arguments(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(
        "ARG BASE=python:3.12.8-slim\n# comment\nFROM ${BASE} AS build\nRUN a \\\n    && b\n"
        "FROM build\nENV A=1 \\\n    B=two\nUSER 10:10\n"
    )
    parsed = parse(path)
    assert parsed.external_bases() == ["python:3.12.8-slim"]
    assert parsed.stages[0].all("RUN")[0].value == "a && b"
    assert parsed.final.env() == {"A": "1", "B": "two"}
    assert EXACT_TAG.match("python:3.12.8-slim-bookworm")
    assert not EXACT_TAG.match("python:3.12-slim")
    assert not EXACT_TAG.match("node:latest")
