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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from corral.store.errors import TRANSIENT_ERRORS, InvalidInputError, StoreUnavailableError

PARTITION_LOCK_KEY = 0x636F7272616C_02
"""Advisory lock key serialising partition creation and removal across replicas."""

COLUMNS = (
    "time",
    "event_id",
    "namespace",
    "server",
    "direction",
    "method",
    "request_id",
    "session_id",
    "user_subject",
    "email",
    "groups",
    "client_id",
    "client_name",
    "client_version",
    "target_kind",
    "target",
    "arguments",
    "result",
    "decision",
    "allowed",
    "filters",
    "status",
    "error",
    "http_status",
    "latency_ms",
    "rpc_id",
)
"""Stored columns in COPY order."""

Record = tuple[Any, ...]

_PARTITION_NAME = re.compile(r"^audit_events_p(\d{8})$")
_STAGING = "audit_events_staging"
VALIDATION_SLICE = 50
"""Events validated between two yields to the event loop, so that a large batch (about 30 us of
validation per event) does not hold up the MCP requests the replica is forwarding."""


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


# --- validation (pure) ----------------------------------------------------------------------


_OPTIONAL_TEXT = (
    "namespace",
    "server",
    "direction",
    "method",
    "sessionId",
    "user",
    "email",
    "clientId",
    "clientName",
    "clientVersion",
    "status",
)
TARGET_KINDS = ("tool", "resource", "prompt", "target")
"""Keys that may carry the call's target; the key used is kept as ``target_kind``."""

_UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")


def _check_texts(event: Mapping[str, Any]) -> None:
    for name in _OPTIONAL_TEXT:
        value = event.get(name)
        if value is not None and type(value) is not str:
            raise InvalidInputError(f"field {name!r} must be a string, got {type(value).__name__}")


def _time(event: Mapping[str, Any]) -> datetime:
    raw = event.get("time")
    if type(raw) is not str:
        raise InvalidInputError("field 'time' is missing or not a string")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInputError(f"field 'time' is not RFC 3339: {raw[:40]!r}") from None
    if parsed.tzinfo is None:
        raise InvalidInputError("field 'time' has no UTC offset; end it with 'Z' or '+00:00'")
    return parsed.astimezone(UTC)


def _event_id(event: Mapping[str, Any]) -> str:
    value = event.get("id")
    if type(value) is not str or not _UUID.match(value := value.lower()):
        raise InvalidInputError("field 'id' is missing or not a UUID")
    if len(value) == 32:
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
    return value


def _json(event: Mapping[str, Any], name: str, kind: type | None = None) -> str | None:
    value = event.get(name)
    if value is None:
        return None
    if kind is not None and type(value) is not kind:
        raise InvalidInputError(f"field {name!r} must be a JSON {kind.__name__}")
    try:
        return orjson.dumps(value).decode()
    except TypeError as error:
        raise InvalidInputError(f"field {name!r} is not JSON-encodable: {error}") from None


def _id_field(event: Mapping[str, Any], name: str) -> str | None:
    value = event.get(name)
    if value is None:
        return None
    if type(value) not in (str, int):
        raise InvalidInputError(f"field {name!r} must be a string or an integer")
    return orjson.dumps(value).decode()


def _groups(event: Mapping[str, Any]) -> list[str]:
    groups = event.get("groups") or []
    if type(groups) is not list or not all(type(g) is str for g in groups):
        raise InvalidInputError("field 'groups' must be a list of strings")
    return groups


def _target(event: Mapping[str, Any]) -> tuple[str | None, str | None]:
    for kind in TARGET_KINDS:
        value = event.get(kind)
        if value is not None:
            if type(value) is not str:
                raise InvalidInputError(f"field {kind!r} must be a string")
            return kind, value
    return None, None


def _allowed(event: Mapping[str, Any]) -> bool | None:
    decision = event.get("decision")
    if decision is None:
        return None
    if type(decision) is not dict:
        raise InvalidInputError("field 'decision' must be an object")
    allowed = decision.get("allowed")
    if allowed is not None and type(allowed) is not bool:
        raise InvalidInputError("field 'decision.allowed' must be true or false")
    return allowed


def _number(event: Mapping[str, Any], name: str, kind: type[int] | type[float]) -> Any:
    value = event.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"field {name!r} must be a number")
    if kind is int and not isinstance(value, int):
        raise InvalidInputError(f"field {name!r} must be an integer")
    return kind(value)


def to_record(event: Mapping[str, Any]) -> Record:
    """One wire-format event as a row in ``COLUMNS`` order; InvalidInputError names the field.

    This runs for every audited message, so it checks types directly rather than through a
    validation library. Keys it does not know are ignored, so newer shims can add fields.
    """
    _check_texts(event)
    get = event.get
    target_kind, target = _target(event)
    return (
        _time(event),
        _event_id(event),
        get("namespace") or "",
        get("server") or "",
        get("direction"),
        get("method"),
        _id_field(event, "requestId"),
        get("sessionId"),
        get("user"),
        get("email"),
        _groups(event),
        get("clientId"),
        get("clientName"),
        get("clientVersion"),
        target_kind,
        target,
        _json(event, "arguments"),
        _json(event, "result"),
        _json(event, "decision"),
        _allowed(event),
        _json(event, "filters", list),
        get("status") or "",
        _json(event, "error"),
        _number(event, "httpStatus", int),
        _number(event, "latencyMs", float),
        _id_field(event, "rpcId"),
    )


def to_records(events: Sequence[Any], first_index: int = 0) -> list[Record]:
    """Validate a whole batch before anything is stored; the error names the event's index
    (counted from ``first_index`` when ``events`` is a slice of a larger batch)."""
    records = []
    for index, event in enumerate(events, first_index):
        if not isinstance(event, Mapping):
            raise InvalidInputError(f"events[{index}] is not an object")
        try:
            records.append(to_record(event))
        except InvalidInputError as error:
            raise InvalidInputError(f"events[{index}]: {error}") from None
    return records


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
