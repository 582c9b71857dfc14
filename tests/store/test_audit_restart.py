"""Audit ingest across a Postgres restart mid-load: the caller retries; none lost, none doubled."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from corral.store.audit import AuditSettings, AuditWriter
from corral.store.audit_query import format_time
from corral.store.errors import StoreUnavailableError
from corral.store.migrations import apply_migrations
from corral.store.pools import PoolSettings, create_pool
from tests.fixtures.store import RestartablePostgres

BATCH_SIZE = 250
RESTART_AFTER = 10
BATCHES_AFTER_RESTART = 10
MAX_BATCHES = 10_000


def batch(number: int, start: datetime) -> list[dict[str, object]]:
    return [
        {
            "time": format_time(start + timedelta(milliseconds=number * BATCH_SIZE + i)),
            "id": uuid.uuid4().hex,
            "namespace": "tools",
            "server": "time",
            "user": "ada",
            "decision": {"allowed": True},
            "method": "tools/call",
            "arguments": {"batch": number, "i": i},
        }
        for i in range(BATCH_SIZE)
    ]


async def test_no_event_lost_or_duplicated_across_a_restart(
    restartable_postgres: RestartablePostgres,
) -> None:
    settings = PoolSettings(restartable_postgres.dsn, max_size=2, connect_timeout=2.0)
    pool = await create_pool(settings)
    try:
        async with pool.acquire() as connection:
            await apply_migrations(connection)
        writer = AuditWriter(pool, AuditSettings())
        server_up = asyncio.Event()
        server_up.set()
        restart_due = asyncio.Event()
        restarted = asyncio.Event()
        start = datetime.now(UTC)
        retries = 0
        sent = 0

        async def produce() -> None:
            nonlocal retries, sent
            after_restart = 0
            while after_restart < BATCHES_AFTER_RESTART and sent < MAX_BATCHES:
                events = batch(sent, start)
                while True:
                    try:
                        await writer.ingest(events)
                        break
                    except StoreUnavailableError:
                        retries += 1
                        await asyncio.wait_for(server_up.wait(), timeout=120)
                sent += 1
                if sent == RESTART_AFTER:
                    restart_due.set()
                if restarted.is_set():
                    after_restart += 1

        async def restart() -> None:
            await asyncio.wait_for(restart_due.wait(), timeout=120)
            server_up.clear()
            await asyncio.to_thread(restartable_postgres.stop)
            await asyncio.to_thread(restartable_postgres.start)
            server_up.set()
            restarted.set()

        await asyncio.gather(produce(), restart())

        async with pool.acquire() as connection:
            total, distinct = await connection.fetchrow(
                "SELECT count(*), count(DISTINCT event_id) FROM audit_events"
            )
        assert retries >= 1, "the restart never interrupted ingest; the test proved nothing"
        assert total == distinct == sent * BATCH_SIZE
    finally:
        await pool.close()
