"""Audit events as the shims send them, checked and turned into rows for COPY (pure).

Rule: ``to_records`` runs for every audited message a gateway ingests, so it checks types
directly rather than through a validation library, and it is compiled with the request path
(pyproject's ``[tool.corral.native]``). A batch is refused whole, with the first bad event's
index and field named; nothing here touches the database (``corral.store.audit`` stores).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from corral.store.errors import InvalidInputError

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
    (counted from ``first_index`` when ``events`` is a slice of a larger batch). Events are
    decoded JSON: an object is a ``dict`` (checked as such, not through the ``Mapping`` ABC)."""
    records = []
    for index, event in enumerate(events, first_index):
        if not isinstance(event, dict):
            raise InvalidInputError(f"events[{index}] is not an object")
        try:
            records.append(to_record(event))
        except InvalidInputError as error:
            raise InvalidInputError(f"events[{index}]: {error}") from None
    return records
