"""Pure parts of activity recording and waking: which calls are a ``tools/list``, the tool
names in JSON and SSE answers, the status patch within the CRD's limits, and a server's state."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from corral.gateway.activity import MAX_TOOLS, status_patch, tool_names, tools_list_id
from corral.gateway.kubedirectory import server_state


def answer(request_id: object, tools: list[str], **result: object) -> bytes:
    listed = [{"name": name, "inputSchema": {"type": "object"}} for name in tools]
    message = {"jsonrpc": "2.0", "id": request_id, "result": {"tools": listed, **result}}
    return orjson.dumps(message)


def test_only_a_first_page_tools_list_request_is_read() -> None:
    assert tools_list_id(b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}') == 7
    assert tools_list_id(b'{"jsonrpc":"2.0","id":"a","method":"tools/list","params":{}}') == "a"
    paged = b'{"jsonrpc":"2.0","id":8,"method":"tools/list","params":{"cursor":"x"}}'
    assert tools_list_id(paged) is None
    called = b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"tools/list"}}'
    assert tools_list_id(called) is None
    assert tools_list_id(b"tools/list not json") is None
    assert tools_list_id(None) is None


def test_tool_names_from_json_and_sse_answers() -> None:
    assert tool_names("application/json", answer(7, ["echo", "add"]), 7) == ["echo", "add"]
    assert tool_names("application/json", answer(8, ["echo"]), 7) is None
    assert tool_names("application/json", answer(7, ["echo"], nextCursor="n"), 7) is None
    notification = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/message"})
    stream = (
        b"event: message\r\ndata: " + notification + b"\r\n\r\n"
        b"id: 1\nevent: message\ndata: " + answer(3, ["echo", "sum"]) + b"\n\n"
    )
    assert tool_names("text/event-stream", stream, 3) == ["echo", "sum"]
    assert tool_names("text/event-stream", b"data: {broken\n\n", 3) is None


def test_status_patch_keeps_within_the_crd_limits() -> None:
    when = datetime(2026, 11, 23, 5, 6, 7, 891, tzinfo=UTC)
    assert status_patch(when, None) == {"status": {"lastActivity": "2026-11-23T05:06:07Z"}}
    names = [f"t{i:05d}" for i in range(MAX_TOOLS + 10)] + ["x" * 300]
    status = status_patch(when, list(reversed(names)))["status"]
    assert status["toolCount"] == MAX_TOOLS + 11
    assert len(status["tools"]) == MAX_TOOLS
    assert status["tools"][0] == "t00000"
    assert all(len(name) <= 256 for name in status["tools"])


def test_server_state_from_the_operators_status() -> None:
    def state(reason: str, status: str = "False", replicas: int = 0) -> tuple[bool, bool, bool]:
        condition = {"type": "Ready", "status": status, "reason": reason}
        found = server_state({"status": {"conditions": [condition], "readyReplicas": replicas}})
        return found.ready, found.asleep, found.starting

    assert state("ScaledToZero") == (False, True, False)
    assert state("ScaledToZero", replicas=1) == (False, True, False)  # pods still terminating
    assert state("Starting") == (False, False, True)
    assert state("Starting", replicas=1) == (True, False, False)
    assert state("AllReplicasReady", "True", 2) == (True, False, False)
    assert state("CrashLoop") == (False, False, False)
    empty = server_state({})
    assert (empty.ready, empty.asleep, empty.starting) == (False, False, False)
