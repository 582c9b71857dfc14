"""Scenario 3: audit ingest into Postgres, events per second (target >= 20,000).

Rule: runs bench/audit_bench.py (the store's own benchmark, `AuditWriter.ingest` with COPY into
daily partitions) against a throwaway embedded Postgres and records its figures.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import time
from typing import Any

from bench.common import BENCH, PYTHON, ROOT
from bench.scenarios import Options, target

LINE = re.compile(
    r"ingested (?P<events>\d+) events in (?P<seconds>[\d.]+) s: (?P<rate>[\d,]+) events/s "
    r"\(batch (?P<batch>\d+), concurrency (?P<concurrency>\d+); validation alone "
    r"(?P<validation>[\d,]+) events/s"
)


def run(options: Options) -> dict[str, Any]:
    events = 50_000 if options.quick else 200_000
    argv = [PYTHON, str(BENCH / "audit_bench.py"), "--embedded", "--events", str(events)]
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    output = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - started
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    match = LINE.search(output)
    if match is None:
        raise RuntimeError(f"audit_bench.py printed no result line: {output[-1000:]}")
    rate = float(match["rate"].replace(",", ""))
    return {
        "figures": {
            "events": int(match["events"]),
            "events per second": round(rate),
            "batch size": int(match["batch"]),
            "batches in flight": int(match["concurrency"]),
            "validation alone, events per second": int(match["validation"].replace(",", "")),
            "CPU of the benchmark process (Postgres not counted), share of one core": round(
                cpu / wall, 2
            ),
            "load average at the end": [round(x, 2) for x in os.getloadavg()],
        },
        "targets": [target("audit ingest, events/s", rate, 20_000, at_least=True)],
        "output": output.strip().splitlines(),
    }
