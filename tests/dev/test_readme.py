"""The README's quickstart, run as written: `make dev`, then the curl line with the printed key.

Two substitutions only: the data directory and the port (a test must not use the user's
~/.local/share/corral/dev nor port 8080), passed through `DEV_FLAGS`. The venv is the one
running these tests, so make is told to take the setup steps (the compiled modules too) as done.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.dev.platform import REPO, start_platform, stop_platform

QUICKSTART = re.compile(r"## Quickstart\n(.*?)\n## ", re.DOTALL)
FENCED = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def quickstart_blocks() -> list[str]:
    section = QUICKSTART.search((REPO / "README.md").read_text())
    assert section is not None, "README.md has no Quickstart section"
    return FENCED.findall(section.group(1))


def test_the_readme_quickstart_works_as_written(tmp_path: Path) -> None:
    start, connect = quickstart_blocks()
    assert start.strip() == "make dev"

    def make_dev(manifests: Path, data_dir: Path, port: int) -> list[str]:
        flags = f"--data-dir {data_dir} --port {port}"
        return [
            "make", "-o", ".venv/.installed", "-o", "node_modules/.installed",
            "-o", "corral/native.json",
            *start.split()[1:], f"DEV_FLAGS={flags}", f"DEV_DIR={manifests}",
        ]  # fmt: skip

    platform = start_platform(tmp_path, make_dev)
    try:
        script = connect.replace("~/.local/share/corral/dev", str(platform.data_dir))
        script = script.replace("127.0.0.1:8080", f"127.0.0.1:{platform.port}")
        completed = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        left = stop_platform(platform)
    assert left == [], "Ctrl-C on make dev left processes behind"
    assert completed.returncode == 0, completed.stderr
    data = next(
        json.loads(line.removeprefix("data:"))
        for line in completed.stdout.splitlines()
        if line.startswith("data:") or line.startswith("{")
    )
    assert data["result"]["serverInfo"]["name"] == "mcp-time"
