"""Scenario 3: audit ingest into Postgres, events per second (target >= 20,000).

Rule: runs bench/audit_bench.py (the store's own benchmark, `AuditWriter.ingest` with COPY into
daily partitions) against a throwaway embedded Postgres and records its figures.
"""

from __future__ import annotations

import re
import subprocess
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
    output = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT).stdout
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
        },
        "targets": [target("audit ingest, events/s", rate, 20_000, at_least=True)],
        "output": output.strip().splitlines(),
    }
