"""Strict parsing: exactly one well-formed JSON-RPC object gets through."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.mcp import jsonrpc
from corral.mcp.jsonrpc import Kind, ProtocolError, parse_message
from corral.mcp.targets import TargetKind, filter_list_result, target_of, valid_name


def refused(body: bytes, **kwargs: int) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_message(body, **kwargs)
    return info.value


def test_request_notification_and_responses_are_classified() -> None:
    request = parse_message(b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}')
    assert (request.kind, request.id, request.method) == (Kind.REQUEST, 7, "tools/list")
    note = parse_message(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert note.kind is Kind.NOTIFICATION
    assert parse_message(b'{"jsonrpc":"2.0","id":"a","result":{}}').kind is Kind.RESULT
    error = parse_message(b'{"jsonrpc":"2.0","id":"a","error":{"code":1,"message":"x"}}')
    assert error.kind is Kind.ERROR


def test_invalid_json_is_a_parse_error() -> None:
    assert refused(b'{"jsonrpc":').code == jsonrpc.PARSE_ERROR
    assert refused(b'{"a": NaN}').code == jsonrpc.PARSE_ERROR
    assert refused(b"\xff\xfe").code == jsonrpc.PARSE_ERROR


def test_duplicate_keys_are_refused_at_any_depth() -> None:
    error = refused(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}')
    assert error.code == jsonrpc.INVALID_REQUEST
    assert "duplicate JSON key 'method'" in error.message
    nested = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}'
    assert refused(nested).code == jsonrpc.INVALID_REQUEST
    assert "duplicate JSON key 'name'" in refused(nested).message


def test_batches_and_non_objects_are_refused() -> None:
    assert "batch" in refused(b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]').message
    for body in (b"1", b'"x"', b"null", b"true"):
        assert refused(body).code == jsonrpc.INVALID_REQUEST


def test_size_limit_gives_413() -> None:
    error = refused(b'{"jsonrpc":"2.0","id":1,"method":"ping"}' + b" " * 100, max_bytes=50)
    assert error.http_status == 413


def test_bad_envelopes_are_refused_with_the_id_when_known() -> None:
    error = refused(b'{"jsonrpc":"1.0","id":3,"method":"ping"}')
    assert error.request_id == 3
    assert refused(b'{"jsonrpc":"2.0","id":true,"method":"ping"}').code == -32600
    assert refused(b'{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}').code == -32600
    assert refused(b'{"jsonrpc":"2.0","id":1}').code == -32600


def test_error_response_shape() -> None:
    assert ProtocolError(-32003, "no", request_id=4).to_response() == {
        "jsonrpc": "2.0",
        "id": 4,
        "error": {"code": -32003, "message": "no"},
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}', "echo"),
        (b'{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p"}}', "p"),
        (b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a://b"}}', "a://b"),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"completion/complete",'
            b'"params":{"ref":{"type":"ref/prompt","name":"p"}}}',
            "p",
        ),
    ],
)
def test_targets_are_extracted(body: bytes, expected: str) -> None:
    found = target_of(parse_message(body))
    assert found is not None
    assert found[1] == expected


def test_names_outside_the_spec_charset_are_invalid() -> None:
    assert valid_name("get_weather.v2")
    assert not valid_name("\uff50rintEnv")
    assert not valid_name("print\u200benv")
    assert not valid_name("")


def test_list_results_are_filtered() -> None:
    result = {"tools": [{"name": "a"}, {"name": "b"}], "nextCursor": "x"}
    filtered = filter_list_result("tools/list", result, lambda kind, name: name == "a")
    assert filtered is not None
    assert filtered[0] == {"tools": [{"name": "a"}], "nextCursor": "x"}
    assert filtered[1] == ["b"]
    assert filter_list_result("tools/call", result, lambda kind, name: True) is None
    assert TargetKind.TOOL.value == "tool"


def outcome(body: bytes) -> jsonrpc.Message | ProtocolError:
    try:
        return parse_message(body)
    except ProtocolError as error:
        return error


@given(st.binary(max_size=200))
def test_arbitrary_bytes_either_parse_or_are_refused(data: bytes) -> None:
    result = outcome(data)
    if isinstance(result, ProtocolError):
        assert result.code in (jsonrpc.PARSE_ERROR, jsonrpc.INVALID_REQUEST)
    else:
        assert isinstance(result.body, dict)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)


@given(json_values)
def test_any_json_value_is_classified_or_refused(value: object) -> None:
    result = outcome(orjson.dumps(value))
    if isinstance(result, ProtocolError):
        assert result.code == jsonrpc.INVALID_REQUEST
    else:
        assert result.body == value


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_compact_and_spaced_bodies_decode_as_the_standard_library_does(value: object) -> None:
    for body in (orjson.dumps(value) if _orjson_writes(value) else b"", json.dumps(value).encode()):
        if body:
            assert jsonrpc.decode_json(body) == json.loads(body)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=5), json_values, min_size=1, max_size=4), st.data())
def test_a_repeated_key_is_refused_however_the_body_is_written(
    members: dict[str, object], data: st.DataObject
) -> None:
    key = data.draw(st.sampled_from(sorted(members)))
    compact = json.dumps(members, separators=(",", ":"), ensure_ascii=False).encode()
    repeated = compact[:-1] + b"," + json.dumps(key, ensure_ascii=False).encode() + b":null}"
    with pytest.raises(ProtocolError, match="duplicate JSON key"):
        jsonrpc.decode_json(repeated)
    spaced = repeated.replace(b'":', b'": ')
    with pytest.raises(ProtocolError, match="duplicate JSON key"):
        jsonrpc.decode_json(spaced)


def _orjson_writes(value: object) -> bool:
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False  # an integer past 64 bits: the body is written by json.dumps only
    return True
