"""The garbage collector's serving settings, applied in a fresh interpreter (this one's test run
keeps CPython's defaults)."""

from __future__ import annotations

import subprocess
import sys

import orjson

from corral.common.gctune import YOUNG_THRESHOLD

PROBE = """
import gc, orjson
before = gc.get_threshold()
from corral.common.gctune import tune_for_serving
line = tune_for_serving()
print(orjson.dumps({"before": before, "after": gc.get_threshold(),
                    "frozen": gc.get_freeze_count(), "line": line}).decode())
"""


def test_serving_settings_freeze_start_up_and_raise_only_the_young_threshold() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", PROBE], capture_output=True, check=True
    )
    seen = orjson.loads(done.stdout)
    assert seen["before"][0] != YOUNG_THRESHOLD
    assert seen["after"] == [YOUNG_THRESHOLD, *seen["before"][1:]]
    assert seen["frozen"] > 1000
    assert seen["line"].startswith(f"{seen['frozen']} start-up objects frozen")
