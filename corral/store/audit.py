"""Audit events: validate a batch, COPY it in, keep daily partitions and retention.

Ingest is idempotent: a batch is COPYed (binary) straight into ``audit_events`` in one
transaction; when that meets an event already stored (a batch retried after a lost reply or a
dropped connection) the transaction rolls back and the batch goes through a per-connection
staging table and ``INSERT ... ON CONFLICT (time, event_id) DO NOTHING``, so nothing is added
twice. Batches that are new, nearly all of them, skip the staging table's writes.
``audit_events`` is partitioned by UTC day; ``maintain_partitions`` creates the days ahead and
drops the days past retention, and ingest creates a missing day on demand. Events older than
retention are not stored (they would be dropped at the next maintenance), and neither are events
dated beyond the partitions ahead.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from corral.store.auditrows import COLUMNS, Record, to_records
from corral.store.errors import TRANSIENT_ERRORS, StoreUnavailableError

PARTITION_LOCK_KEY = 0x636F7272616C_02
"""Advisory lock key serialising partition creation and removal across replicas."""


_PARTITION_NAME = re.compile(r"^audit_events_p(\d{8})$")
_STAGING = "audit_events_staging"
VALIDATION_SLICE = 50
"""Events validated between two yields to the event loop, so that a large batch (3.4 us of
validation per event with arguments and results, compiled) does not hold up the MCP requests
the replica is forwarding."""


@dataclass(frozen=True)
class AuditSettings:
    """Retention in whole UTC days, and how many days of partitions to keep ready ahead."""

    retention_days: int = 30
    days_ahead: int = 3


@dataclass(frozen=True)
class IngestResult:
    """Counts from one batch: newly stored, already present, and outside the stored window."""

    stored: int
    duplicates: int
    out_of_window: int


# --- partitions (pure) ----------------------------------------------------------------------


def partition_name(day: date) -> str:
    return f"audit_events_p{day:%Y%m%d}"


def partition_day(name: str) -> date | None:
    match = _PARTITION_NAME.match(name)
    return None if match is None else datetime.strptime(match[1], "%Y%m%d").date()


def stored_window(today: date, settings: AuditSettings) -> tuple[date, date]:
    """First and last UTC day (inclusive) whose events are kept."""
    return today - timedelta(days=settings.retention_days - 1), today + timedelta(
        days=settings.days_ahead
    )


def partitions_to_drop(existing: Iterable[str], today: date, settings: AuditSettings) -> list[str]:
    first, _ = stored_window(today, settings)
    return sorted(
        name for name in existing if (day := partition_day(name)) is not None and day < first
    )


def _create_partition_sql(day: date) -> str:
    start = f"{day.isoformat()} 00:00:00+00"
    end = f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00"
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF audit_events "
        f"FOR VALUES FROM ('{start}') TO ('{end}')"
    )


# --- database ----------------------------------------------------------------------------------


async def existing_partitions(connection: asyncpg.Connection) -> list[str]:
    rows = await connection.fetch(
        """
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'audit_events'::regclass ORDER BY c.relname
        """
    )
    return [row["relname"] for row in rows]


async def ensure_partitions(connection: asyncpg.Connection, days: Iterable[date]) -> None:
    """Create the daily partitions for ``days`` that do not exist yet (safe across replicas)."""
    wanted = sorted(set(days))
    if not wanted:
        return
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK_KEY)
        for day in wanted:
            await connection.execute(_create_partition_sql(day))


async def maintain_partitions(
    connection: asyncpg.Connection, settings: AuditSettings, today: date | None = None
) -> list[str]:
    """Create partitions from today to ``days_ahead``; drop those past retention (returned)."""
    today = today or datetime.now(UTC).date()
    await ensure_partitions(
        connection, (today + timedelta(days=n) for n in range(settings.days_ahead + 1))
    )
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK_KEY)
        dropped = partitions_to_drop(await existing_partitions(connection), today, settings)
        for name in dropped:
            await connection.execute(f"DROP TABLE IF EXISTS {name}")
    return dropped


class AuditWriter:
    """Stores batches of audit events; remembers which day partitions it has seen."""

    def __init__(
        self, pool: asyncpg.Pool, settings: AuditSettings, *, today: date | None = None
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._today = today
        self._known_days: set[date] = set()

    async def ingest(self, events: Sequence[Any]) -> IngestResult:
        """Validate and store ``events``.

        InvalidInputError: nothing was stored. StoreUnavailableError: retry the same batch.
        """
        records: list[Record] = []
        for start in range(0, len(events), VALIDATION_SLICE):
            if start:
                await asyncio.sleep(0)
            records += to_records(events[start : start + VALIDATION_SLICE], start)
        first, last = stored_window(self._today or datetime.now(UTC).date(), self._settings)
        kept = [r for r in records if first <= r[0].date() <= last]
        if not kept:
            return IngestResult(0, 0, len(records))
        try:
            stored = await self._store(kept)
        except TRANSIENT_ERRORS as error:
            raise StoreUnavailableError(
                f"audit batch not confirmed stored ({error}); retry it"
            ) from error
        return IngestResult(stored, len(kept) - stored, len(records) - len(kept))

    async def _store(self, records: list[Record]) -> int:
        days = {record[0].date() for record in records}
        async with self._pool.acquire() as connection:
            try:
                return await self._copy(connection, records, days)
            except asyncpg.CheckViolationError:
                # A day's partition went away under us (retention ran elsewhere): recreate it.
                self._known_days -= days
                return await self._copy(connection, records, days)

    async def _copy(
        self, connection: asyncpg.Connection, records: list[Record], days: set[date]
    ) -> int:
        missing = days - self._known_days
        if missing:
            await ensure_partitions(connection, missing)
            self._known_days |= missing
        try:
            async with connection.transaction():
                await connection.copy_records_to_table(
                    "audit_events", records=records, columns=COLUMNS
                )
            return len(records)
        except asyncpg.UniqueViolationError:
            pass  # some events were stored before: keep those, store the rest
        async with connection.transaction():
            await connection.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} "
                "(LIKE audit_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            await connection.copy_records_to_table(_STAGING, records=records, columns=COLUMNS)
            names = ", ".join(COLUMNS)
            status = await connection.execute(
                f"INSERT INTO audit_events ({names}) SELECT {names} FROM {_STAGING} "
                "ON CONFLICT (time, event_id) DO NOTHING"
            )
        return int(status.rsplit(" ", 1)[1])

    def forget_partitions(self) -> None:
        """Forget known partitions (after maintenance dropped some)."""
        self._known_days.clear()
