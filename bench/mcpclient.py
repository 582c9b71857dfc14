"""Just enough of an MCP client to open a session before load and to check one call works.

Rule: plain HTTP (urllib); accepts a JSON or an SSE answer, as streamable HTTP allows; a failed
step raises with the status and body so a broken setup is never benchmarked.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PROTOCOL = "2025-06-18"
ACCEPT = "application/json, text/event-stream"


@dataclass(frozen=True)
class Session:
    """An initialized session: the headers every later request carries."""

    headers: dict[str, str]

    def body(self, tool: str, arguments: Mapping[str, Any]) -> bytes:
        message = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": tool, "arguments": dict(arguments)},
        }
        # compact, as the MCP SDK clients write it (the Python SDK's HTTP client and the
        # TypeScript SDK's JSON.stringify)
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


class HttpError(RuntimeError):
    """A non-2xx answer; ``status`` says which."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _post_settled(
    url: str, body: Mapping[str, Any], headers: Mapping[str, str], timeout: float = 30.0
) -> tuple[Any, Any]:
    """POST, retrying while the answer is 404: a gateway whose workers share sessions through
    a database (ContextForge) may not know a new session on every worker at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _post(url, body, headers)
        except HttpError as error:
            if error.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def _post(url: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> tuple[Any, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Accept": ACCEPT, **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
            return response.headers, _message(text, response.headers.get("Content-Type", ""))
    except urllib.error.HTTPError as error:
        detail = f"{url}: HTTP {error.code}: {error.read()[:500]!r}"
        raise HttpError(detail, error.code) from None


def _message(text: str, content_type: str) -> Any:
    if not text:
        return None
    if content_type.startswith("text/event-stream"):
        for line in text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if "id" in message:
                    return message
        return None
    return json.loads(text)


def initialize(url: str, headers: Callable[[], dict[str, str]]) -> Session:
    """initialize + notifications/initialized; ``headers`` is called once per request (a
    fresh identity assertion when talking to a shim directly)."""
    reply_headers, reply = _post(
        url,
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "corral-bench", "version": "1.0"},
            },
        },
        headers(),
    )
    if reply is None or "result" not in reply:
        raise RuntimeError(f"{url}: initialize failed: {reply!r}")
    session = {"MCP-Protocol-Version": reply["result"]["protocolVersion"], "Accept": ACCEPT}
    session["Content-Type"] = "application/json"
    if reply_headers.get("Mcp-Session-Id"):
        session["Mcp-Session-Id"] = reply_headers["Mcp-Session-Id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    _post_settled(url, initialized, {**headers(), **session})
    return Session(session)


def call_once(
    url: str,
    session: Session,
    headers: Mapping[str, str],
    tool: str,
    arguments: Mapping[str, Any],
) -> Any:
    """One tools/call; raises unless it answered with a successful result."""
    body = json.loads(session.body(tool, arguments))
    _, reply = _post_settled(url, body, {**session.headers, **headers})
    if reply is None or "result" not in reply or reply["result"].get("isError"):
        raise RuntimeError(f"{url}: tools/call {tool} failed: {reply!r}")
    return reply["result"]
