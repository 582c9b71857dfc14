"""The MCP conformance server suite, against server-everything directly and through the shim:
every check that passes directly (the committed baseline) passes through the shim too."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.mcp_servers import NODE_MODULES, PINNED_NODE
from tests.fixtures.shim import ShimHandle, asserting_proxy

ShimFactory = Callable[..., ShimHandle]
EXPECTED = Path(__file__).with_name("conformance_expected.json")
CONFORMANCE = NODE_MODULES / ".bin" / "conformance"
SCENARIO_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d\d-\d\dT[\d-]+Z$")

pytestmark = pytest.mark.node


async def run_suite(url: str, output: Path) -> set[str]:
    """Run the suite and return the ids (`scenario/check`) of the checks that passed."""
    if not CONFORMANCE.exists():
        pytest.fail(f"{CONFORMANCE} is missing: run `make setup` (npm ci)")
    env = {**os.environ, "PATH": f"{PINNED_NODE.parent}:{os.environ.get('PATH', '')}"}
    process = await asyncio.create_subprocess_exec(
        str(CONFORMANCE),
        "server",
        "--url",
        url,
        "-o",
        str(output),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    log, _ = await asyncio.wait_for(process.communicate(), 300)
    passed: set[str] = set()
    for directory in output.iterdir():  # noqa: ASYNC240
        match = SCENARIO_DIR.match(directory.name)
        assert match is not None, directory.name
        checks = json.loads((directory / "checks.json").read_text())
        passed.update(
            f"{match['scenario']}/{check['id']}" for check in checks if check["status"] == "SUCCESS"
        )
    assert passed, log.decode(errors="replace")[-3000:]
    return passed


async def test_the_shim_passes_what_the_server_passes(
    shim_factory: ShimFactory, everything_http: str, tmp_path: Path
) -> None:
    direct = await run_suite(everything_http, tmp_path / "direct")
    expected = set(json.loads(EXPECTED.read_text())["passing"])
    assert direct == expected, "the pinned server-everything changed: update the baseline"
    shim = shim_factory(everything_http)
    async with asserting_proxy(shim) as url:
        through = await run_suite(url, tmp_path / "shim")
    assert expected - through == set()
