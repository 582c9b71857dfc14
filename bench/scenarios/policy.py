"""Scenario 4: policy decisions per second (target >= 100,000 with plain rules).

Rule: runs bench/policy_bench.py (1,000 AccessPolicies, 10,000 tools, 100 servers) and records
every rate it prints; the target is checked on random requests against rules without `when`.
The share of a core the process got is recorded too: the benchmark is single-threaded pure
Python, so on a machine busy with other work the wall-clock rate understates what one core does.
"""

from __future__ import annotations

import re
import resource
import subprocess
import time
from typing import Any

from bench.common import BENCH, PYTHON, ROOT
from bench.scenarios import Options, target

BUILD = re.compile(r"^build .*? policies, (?P<section>.+): (?P<seconds>[\d.]+ s)$")
RATE = re.compile(r"^(?P<label>.+?)\s+(?P<rate>[\d,]+) /s\s+(?P<us>[\d.]+) us each$")


def run(options: Options) -> dict[str, Any]:
    seconds = "1" if options.quick else "3"
    argv = [PYTHON, str(BENCH / "policy_bench.py"), "--seconds", seconds]
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    output = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - started
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    share = cpu / wall
    figures: dict[str, Any] = {}
    section = ""
    for line in output.splitlines():
        build = BUILD.match(line)
        if build:
            section = build["section"]
            figures[f"build 1,000 policies, {section}"] = build["seconds"]
            continue
        match = RATE.match(line.strip())
        if match:
            label = (
                f"{section}: {match['label'].strip()}" if line.startswith(" ") else match["label"]
            )
            figures[label] = f"{int(match['rate'].replace(',', '')):,}/s ({match['us']} us)"
    plain = next(
        (v for k, v in figures.items() if k.startswith("rules without") and "random" in k), None
    )
    if plain is None:
        raise RuntimeError(f"policy_bench.py printed no plain-rule rate: {output[-1000:]}")
    rate = float(plain.split("/s")[0].replace(",", ""))
    figures["CPU the benchmark process got, share of one core"] = round(share, 2)
    figures["plain rules, random requests, per CPU-second (rate / share, an estimate)"] = (
        f"{rate / share:,.0f}/s"
    )
    return {
        "figures": figures,
        "targets": [
            target("policy decisions/s (random requests, no when)", rate, 100_000, at_least=True)
        ],
        "output": output.strip().splitlines(),
    }
