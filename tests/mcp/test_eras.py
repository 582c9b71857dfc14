"""Era detection and the 2026-07-28 header checks."""

from __future__ import annotations

import pytest

from corral.mcp import eras
from corral.mcp.jsonrpc import HEADER_MISMATCH, ProtocolError, parse_message

CALL = (
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
    b'"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}'
)
GOOD = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "echo"}


def test_era_comes_from_header_or_meta() -> None:
    message = parse_message(CALL)
    assert eras.era_of({}, message) is eras.Era.STATELESS
    assert eras.era_of({"mcp-protocol-version": "2025-11-25"}) is eras.Era.SESSION
    assert eras.era_of({}) is eras.Era.SESSION


def test_matching_headers_pass() -> None:
    eras.check_stateless_headers(GOOD, parse_message(CALL))


@pytest.mark.parametrize(
    "headers",
    [
        {**GOOD, "mcp-method": "tools/list"},
        {**GOOD, "mcp-name": "printEnv"},
        {k: v for k, v in GOOD.items() if k != "mcp-name"},
        {k: v for k, v in GOOD.items() if k != "mcp-method"},
        {**GOOD, "mcp-protocol-version": "2025-11-25"},
    ],
)
def test_mismatches_are_refused_with_400(headers: dict[str, str]) -> None:
    with pytest.raises(ProtocolError) as info:
        eras.check_stateless_headers(headers, parse_message(CALL))
    assert (info.value.code, info.value.http_status, info.value.request_id) == (
        HEADER_MISMATCH,
        400,
        1,
    )


def test_base64_name_header_is_decoded() -> None:
    body = (
        '{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"caf\u00e9"}}'
    ).encode()
    headers = {"mcp-method": "prompts/get", "mcp-name": "=?base64?Y2Fmw6k=?="}
    eras.check_stateless_headers(headers, parse_message(body))


def test_unknown_version_is_refused() -> None:
    with pytest.raises(ProtocolError):
        eras.check_version_header({"mcp-protocol-version": "1999-01-01"})
    assert eras.check_version_header({}) == eras.DEFAULT_VERSION


def test_accepts() -> None:
    assert eras.accepts("application/json, text/event-stream;q=0.9", "text/event-stream")
    assert not eras.accepts("application/json", "text/event-stream")
