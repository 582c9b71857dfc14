"""JSON-RPC 2.0 as MCP carries it: strict parsing, classification and error construction.

Rule: pure functions over bytes and dicts. Anything a client sends that is not exactly one
well-formed JSON-RPC object (invalid JSON, duplicate keys, batch arrays, scalars, oversized
bodies) is refused with a `ProtocolError` that already knows its JSON-RPC code and HTTP status.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNAUTHENTICATED = -32001
ACCESS_DENIED = -32003
UPSTREAM_UNAVAILABLE = -32004
FILTER_DENIED = -32005
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022

DEFAULT_MAX_BYTES = 4 * 1024 * 1024

RequestId = str | int


class ProtocolError(Exception):
    """A message refused before it reaches any server: JSON-RPC code, HTTP status, reason."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        http_status: int = 400,
        request_id: RequestId | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.request_id = request_id
        self.data = data

    def to_response(self) -> dict[str, Any]:
        """The JSON-RPC error response carrying this refusal."""
        return error_response(self.request_id, self.code, self.message, self.data)


class Kind(enum.Enum):
    """What a JSON-RPC message is."""

    REQUEST = "request"
    NOTIFICATION = "notification"
    RESULT = "result"
    ERROR = "error"


@dataclass(init=False, slots=True)
class Message:
    """One parsed JSON-RPC message and the fields every hop needs. Never changed once made."""

    kind: Kind
    body: dict[str, Any]
    id: RequestId | None
    method: str | None

    def __init__(
        self,
        kind: Kind,
        body: dict[str, Any],
        id: RequestId | None = None,
        method: str | None = None,
    ) -> None:
        self.kind = kind
        self.body = body
        self.id = id
        self.method = method

    @property
    def params(self) -> Mapping[str, Any]:
        params = self.body.get("params")
        return params if isinstance(params, dict) else {}

    @property
    def is_request(self) -> bool:
        return self.kind is Kind.REQUEST

    @property
    def is_response(self) -> bool:
        return self.kind in (Kind.RESULT, Kind.ERROR)


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        keys = [key for key, _ in pairs]
        repeated = next(key for index, key in enumerate(keys) if key in keys[:index])
        raise ProtocolError(INVALID_REQUEST, f"duplicate JSON key {repeated!r}: send each key once")
    return result


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(PARSE_ERROR, f"invalid JSON: {name} is not a JSON value")


_STRICT_DECODER = json.JSONDecoder(
    object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
)


def decode_json(body: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Decode one JSON document strictly: size-limited, no duplicate keys, no NaN/Infinity.

    A body written exactly as orjson writes what it decodes to (compact, as MCP clients send)
    cannot hold a repeated key, since the value written back would lack it; it is taken as
    orjson decoded it. Any other body goes through the strict decoder that finds repeated keys.
    """
    if len(body) > max_bytes:
        raise ProtocolError(
            INVALID_REQUEST,
            f"message of {len(body)} bytes exceeds the limit of {max_bytes} bytes",
            http_status=413,
        )
    try:
        value = orjson.loads(body)
        if orjson.dumps(value) == body:
            return value
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        pass  # the strict decoder says what is wrong, or takes what orjson does not
    try:
        return _STRICT_DECODER.decode(body.decode())
    except ProtocolError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(PARSE_ERROR, f"invalid JSON: {exc}") from None


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def classify(body: Any) -> Message:
    """Turn a decoded JSON value into a `Message`, refusing anything but one JSON-RPC object."""
    if isinstance(body, list):
        raise ProtocolError(
            INVALID_REQUEST, "JSON-RPC batch arrays are not supported: send one message per request"
        )
    if not isinstance(body, dict):
        raise ProtocolError(INVALID_REQUEST, "a JSON-RPC message must be a JSON object")
    raw_id = body.get("id")
    request_id = raw_id if _valid_id(raw_id) else None
    if body.get("jsonrpc") != "2.0":
        raise ProtocolError(
            INVALID_REQUEST, 'the "jsonrpc" member must be "2.0"', request_id=request_id
        )
    if "id" in body and not _valid_id(raw_id) and "method" in body:
        raise ProtocolError(INVALID_REQUEST, '"id" must be a string or an integer')
    method = body.get("method")
    if method is not None:
        if not isinstance(method, str) or not method:
            raise ProtocolError(
                INVALID_REQUEST, '"method" must be a non-empty string', request_id=request_id
            )
        params = body.get("params")
        if params is not None and not isinstance(params, dict):
            raise ProtocolError(
                INVALID_REQUEST, '"params" must be an object', request_id=request_id
            )
        if "id" in body:
            return Message(Kind.REQUEST, body, request_id, method)
        return Message(Kind.NOTIFICATION, body, None, method)
    if "result" in body and "error" not in body:
        return Message(Kind.RESULT, body, request_id)
    if "error" in body and "result" not in body and isinstance(body["error"], dict):
        return Message(Kind.ERROR, body, request_id)
    raise ProtocolError(
        INVALID_REQUEST,
        "not a JSON-RPC request, notification or response",
        request_id=request_id,
    )


def parse_message(body: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Message:
    """Parse exactly one JSON-RPC message from a request body."""
    return classify(decode_json(body, max_bytes=max_bytes))


def parse_trusted(data: bytes | str) -> Message | None:
    """Parse a message from a trusted upstream quickly; None when it is not one JSON-RPC object."""
    try:
        return classify(orjson.loads(data))
    except (orjson.JSONDecodeError, ProtocolError):
        return None


def error_response(
    request_id: RequestId | None, code: int, message: str, data: Any = None
) -> dict[str, Any]:
    """A JSON-RPC error response."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def result_response(request_id: RequestId | None, result: Any) -> dict[str, Any]:
    """A JSON-RPC result response."""
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def dumps(message: Mapping[str, Any]) -> bytes:
    """Serialise a message compactly."""
    return orjson.dumps(message)
