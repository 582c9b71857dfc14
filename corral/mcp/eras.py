"""The two MCP protocol eras and the HTTP headers that go with them.

Session era (2024-11-05 .. 2025-11-25): initialize, `Mcp-Session-Id`, GET streams, resumption.
Stateless era (2026-07-28): every request carries its version in `_meta`, and `Mcp-Method` /
`Mcp-Name` headers that an intermediary must check against the body (mismatch: HTTP 400, -32020).

Rule: pure functions over header mappings (lower-case keys) and parsed messages.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Mapping

from corral.mcp.jsonrpc import (
    HEADER_MISMATCH,
    INVALID_REQUEST,
    Message,
    ProtocolError,
)
from corral.mcp.targets import HEADER_NAMED_METHODS

SESSION_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
STATELESS_VERSIONS = ("2026-07-28",)
DEFAULT_VERSION = "2025-03-26"
"""The version a server assumes when `MCP-Protocol-Version` is absent."""

PROTOCOL_VERSION_HEADER = "mcp-protocol-version"
SESSION_ID_HEADER = "mcp-session-id"
METHOD_HEADER = "mcp-method"
NAME_HEADER = "mcp-name"
LAST_EVENT_ID_HEADER = "last-event-id"
PROTOCOL_VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion"

_SESSION_ID = re.compile(r"[\x21-\x7e]{1,256}")
_BASE64_SENTINEL = re.compile(r"=\?base64\?(?P<payload>[A-Za-z0-9+/=]*)\?=")


class Era(enum.Enum):
    """Which protocol family a request belongs to."""

    SESSION = "session"
    STATELESS = "stateless"


def meta_version(message: Message) -> str | None:
    """The protocol version a stateless-era request carries in `params._meta`."""
    meta = message.params.get("_meta")
    if isinstance(meta, dict):
        version = meta.get(PROTOCOL_VERSION_META_KEY)
        if isinstance(version, str):
            return version
    return None


def era_of(headers: Mapping[str, str], message: Message | None = None) -> Era:
    """The era of a request, from its version header or, failing that, its `_meta`."""
    version = headers.get(PROTOCOL_VERSION_HEADER)
    if version is None and message is not None:
        version = meta_version(message)
    return Era.STATELESS if version in STATELESS_VERSIONS else Era.SESSION


def valid_session_id(value: str) -> bool:
    """True for a session id made of visible ASCII, as the transport requires."""
    return _SESSION_ID.fullmatch(value) is not None


def decode_header_value(value: str | None) -> str | None:
    """A header value, with the `=?base64?...?=` form for non-ASCII text decoded; None if bad."""
    if value is None:
        return None
    match = _BASE64_SENTINEL.fullmatch(value)
    if match is None:
        return value
    try:
        return base64.b64decode(match["payload"], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def check_stateless_headers(headers: Mapping[str, str], message: Message) -> None:
    """Refuse a 2026-07-28 request whose routing headers disagree with its body (400, -32020)."""
    if message.method is None:
        return
    version_header = headers.get(PROTOCOL_VERSION_HEADER)
    body_version = meta_version(message)
    if body_version is not None and version_header != body_version:
        raise _mismatch(message, "MCP-Protocol-Version", "_meta protocol version")
    method_header = headers.get(METHOD_HEADER)
    if method_header is None and not message.is_request:
        return
    if method_header != message.method:
        raise _mismatch(message, "Mcp-Method", "method")
    key = HEADER_NAMED_METHODS.get(message.method)
    if key is not None and decode_header_value(headers.get(NAME_HEADER)) != message.params.get(key):
        raise _mismatch(message, "Mcp-Name", f"{key!r} parameter")


def _mismatch(message: Message, header: str, field: str) -> ProtocolError:
    return ProtocolError(
        HEADER_MISMATCH,
        f"the {header} header does not match the body's {field}: send the same value in both",
        request_id=message.id,
    )


def check_version_header(headers: Mapping[str, str]) -> str:
    """The request's protocol version; an unknown one is refused with HTTP 400."""
    version = headers.get(PROTOCOL_VERSION_HEADER, DEFAULT_VERSION)
    if version not in SESSION_VERSIONS and version not in STATELESS_VERSIONS:
        raise ProtocolError(
            INVALID_REQUEST,
            f"unsupported MCP-Protocol-Version {version!r}; supported: "
            f"{', '.join(SESSION_VERSIONS + STATELESS_VERSIONS)}",
        )
    return version


def accepts(accept_header: str | None, media_type: str) -> bool:
    """True when an Accept header admits a media type (or everything)."""
    if not accept_header:
        return False
    for part in accept_header.split(","):
        value = part.split(";", 1)[0].strip().lower()
        if value in (media_type, "*/*"):
            return True
    return False
