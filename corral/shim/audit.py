"""Audit events: one per MCP message, with payloads per the configured mode and redaction.

Rule: pure construction. `AuditEvent.to_dict` is the wire format the gateway's ingest stores
(documented in docs/shim.md): `requestId` is the HTTP request's id (the gateway's
`X-Request-Id`, so gateway logs and audit events correlate), `rpcId` the JSON-RPC message id;
payloads are `none` (left out), `metadata` (argument names and result size only) or `full`
(values, with the configured JSON paths replaced by "[REDACTED]").
"""

from __future__ import annotations

import copy
import functools
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic as _monotonic
from time import time as _now
from typing import Any, Literal

import orjson

PayloadMode = Literal["none", "metadata", "full"]
REDACTED = "[REDACTED]"


def utc_timestamp(now: float) -> str:
    """``now`` (seconds since the epoch) in ISO 8601 with milliseconds and ``+00:00``, as
    ``datetime.isoformat(timespec="milliseconds")`` writes it; the date and time of day are
    formatted once per second."""
    second = int(now)
    millis = min(999, int((now - second) * 1000))
    return f"{_utc_second(second)}.{millis:03d}+00:00"


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def parse_path(path: str) -> tuple[str, ...]:
    """A redaction path (`$.arguments.password`, `arguments.*.token`) as its segments."""
    return tuple(segment for segment in path.removeprefix("$").split(".") if segment)


def redact(value: Any, paths: Iterable[Sequence[str]]) -> Any:
    """A copy of `value` with every path's target replaced by "[REDACTED]"."""
    result = copy.deepcopy(value)
    for path in paths:
        _redact_in(result, list(path))
    return result


def _redact_in(node: Any, path: list[str]) -> None:
    if not path:
        return
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        keys = list(node) if head == "*" else [head] if head in node else []
        for key in keys:
            if rest:
                _redact_in(node[key], rest)
            else:
                node[key] = REDACTED
    elif isinstance(node, list):
        indexes = range(len(node)) if head == "*" else [int(head)] if head.isdigit() else []
        for index in indexes:
            if index < len(node):
                if rest:
                    _redact_in(node[index], rest)
                else:
                    node[index] = REDACTED


def payload(mode: PayloadMode, value: Any, paths: Sequence[Sequence[str]], root: str) -> Any:
    """A payload as the mode records it; `root` names it in redaction paths (`arguments`)."""
    if mode == "none" or value is None:
        return None
    if mode == "metadata":
        if isinstance(value, dict):
            return {"keys": sorted(value), "bytes": len(orjson.dumps(value))}
        return {"bytes": len(orjson.dumps(value))}
    return redact({root: value}, paths)[root]


@dataclass(init=False, slots=True)
class AuditEvent:
    """What happened to one MCP message. ``started`` is when it was made (monotonic); ``time``
    and ``id`` are made then too unless given."""

    namespace: str
    server: str
    direction: Literal["client", "server"]
    method: str | None
    request_id: str | None
    rpc_id: str | int | None
    session_id: str | None
    user: str | None
    email: str | None
    groups: Sequence[str]
    client_id: str | None
    client_name: str | None
    client_version: str | None
    target_kind: str | None
    target: str | None
    arguments: Any
    result: Any
    decision: dict[str, Any] | None
    filters: list[dict[str, Any]]
    status: str
    error: dict[str, Any] | None
    http_status: int | None
    started: float
    time: str
    id: str
    latency_ms: float | None

    def __init__(
        self,
        namespace: str,
        server: str,
        *,
        direction: Literal["client", "server"] = "client",
        method: str | None = None,
        request_id: str | None = None,
        rpc_id: str | int | None = None,
        session_id: str | None = None,
        user: str | None = None,
        email: str | None = None,
        groups: Sequence[str] = (),
        client_id: str | None = None,
        client_name: str | None = None,
        client_version: str | None = None,
        target_kind: str | None = None,
        target: str | None = None,
        arguments: Any = None,
        result: Any = None,
        decision: dict[str, Any] | None = None,
        filters: list[dict[str, Any]] | None = None,
        status: str = "ok",
        error: dict[str, Any] | None = None,
        http_status: int | None = None,
        time: str | None = None,
        id: str | None = None,
        latency_ms: float | None = None,
    ) -> None:
        self.namespace = namespace
        self.server = server
        self.direction = direction
        self.method = method
        self.request_id = request_id
        self.rpc_id = rpc_id
        self.session_id = session_id
        self.user = user
        self.email = email
        self.groups = groups
        self.client_id = client_id
        self.client_name = client_name
        self.client_version = client_version
        self.target_kind = target_kind
        self.target = target
        self.arguments = arguments
        self.result = result
        self.decision = decision
        self.filters = [] if filters is None else filters
        self.status = status
        self.error = error
        self.http_status = http_status
        self.started = _monotonic()
        self.time = utc_timestamp(_now()) if time is None else time
        self.id = secrets.token_hex(16) if id is None else id
        self.latency_ms = latency_ms

    def finish(self, status: str, http_status: int | None = None) -> None:
        self.status = status
        self.http_status = http_status
        self.latency_ms = round((_monotonic() - self.started) * 1000, 3)

    def to_dict(self) -> dict[str, Any]:
        """The event on the wire: camelCase keys, unset fields left out."""
        data: dict[str, Any] = {
            "id": self.id,
            "time": self.time,
            "namespace": self.namespace,
            "server": self.server,
            "direction": self.direction,
            "groups": list(self.groups),
            "status": self.status,
        }
        for key, value in (
            ("method", self.method),
            ("requestId", self.request_id),
            ("rpcId", self.rpc_id),
            ("sessionId", self.session_id),
            ("user", self.user),
            ("email", self.email),
            ("clientId", self.client_id),
            ("clientName", self.client_name),
            ("clientVersion", self.client_version),
            (self.target_kind or "target", self.target),
            ("arguments", self.arguments),
            ("result", self.result),
            ("decision", self.decision),
            ("filters", self.filters or None),
            ("error", self.error),
            ("httpStatus", self.http_status),
            ("latencyMs", self.latency_ms),
        ):
            if value is not None:
                data[key] = value
        return data
