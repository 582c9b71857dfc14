"""Activity on the server's status: ``lastActivity`` and the tools a ``tools/list`` answered.

Rule: the request path only notes what happened in memory (``StatusWriter.note``); a background
task writes the notes as merge patches of the status subresource, at most one patch per object
per ``interval`` on each replica, so a busy server costs the API server a few writes a minute.
The operator reads ``lastActivity`` to decide idleness, so the interval must stay well below the
shortest ``idleTimeout``. A write the API server could not take (unreachable, a dropped
connection, no answer within ``REQUEST_TIMEOUT``, 429 or 5xx) is kept and tried again at the
next interval, under any newer note; 404 (the object is gone) and other refusals are logged and
dropped. The pure functions here find a ``tools/list`` call and the tool names in its answer
(JSON or an SSE stream), or None when the answer is not a complete first page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

GROUP, VERSION = "corral.dev", "v1alpha1"
DEFAULT_INTERVAL = 15.0
MAX_TOOLS = 4096
MAX_TOOL_NAME = 256
MAX_CAPTURE_BYTES = 4 * 1024 * 1024
"""A ``tools/list`` answer larger than this is forwarded but not read for names."""

API_ERRORS: tuple[type[Exception], ...] = (ApiException, OSError, urllib3.exceptions.HTTPError)
"""What a call through the Kubernetes client raises when the API server refuses it
(``ApiException``), cannot be reached, drops the connection or does not answer in time."""
REQUEST_TIMEOUT = (5.0, 10.0)
"""Seconds to connect to the API server and to wait for its answer to one write: the client
has no limit of its own, and a write that never returns would stall what waits on it."""


@dataclass(frozen=True)
class Target:
    """The object whose status records the activity."""

    plural: str
    namespace: str
    name: str


def tools_list_id(body: bytes | None) -> Any | None:
    """The JSON-RPC id of a ``tools/list`` request for the first page, else None."""
    if not body or b"tools/list" not in body:
        return None
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict) or message.get("method") != "tools/list":
        return None
    params = message.get("params")
    if isinstance(params, dict) and params.get("cursor") is not None:
        return None
    return message.get("id")


def tool_names(content_type: str, payload: bytes, request_id: Any) -> list[str] | None:
    """Tool names in the answer to ``request_id``; None unless it is a complete list."""
    if content_type.startswith("text/event-stream"):
        messages = _sse_messages(payload)
    else:
        messages = [_loads(payload)]
    for message in messages:
        if not isinstance(message, dict) or message.get("id") != request_id:
            continue
        result = message.get("result")
        if not isinstance(result, dict) or result.get("nextCursor"):
            return None
        tools = result.get("tools")
        if not isinstance(tools, list):
            return None
        return [t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]
    return None


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _sse_messages(payload: bytes) -> list[Any]:
    messages = []
    for event in payload.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [
            line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
        ]
        if data:
            messages.append(_loads(b"\n".join(data)))
    return messages


def status_patch(last_activity: datetime, tools: Sequence[str] | None) -> dict[str, Any]:
    """The merge patch for one object (tool names beyond the CRD's limits are left out)."""
    status: dict[str, Any] = {"lastActivity": last_activity.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if tools is not None:
        status["tools"] = sorted(name for name in tools if len(name) <= MAX_TOOL_NAME)[:MAX_TOOLS]
        status["toolCount"] = len(tools)
    return {"status": status}


@dataclass(frozen=True)
class _Note:
    last_activity: datetime
    tools: tuple[str, ...] | None


class StatusWriter:
    """Writes noted activity to status subresources from a background task.

    ``note`` starts the task on first use; ``aclose`` writes what is pending and stops it. A
    note stays pending until it is written or a newer one replaces it (which keeps its tools
    unless it lists its own).
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        interval: float = DEFAULT_INTERVAL,
        request_timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._interval = interval
        self._request_timeout = request_timeout
        self._pending: dict[Target, _Note] = {}
        self._task: asyncio.Task[None] | None = None

    def note(self, target: Target, tools: Sequence[str] | None = None) -> None:
        if tools is None:
            earlier = self._pending.get(target)
            listed = None if earlier is None else earlier.tools
        else:
            listed = tuple(tools)
        self._pending[target] = _Note(datetime.now(UTC), listed)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def pending(self) -> int:
        """How many objects have activity not yet written."""
        return len(self._pending)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        for target in self._pending:
            log.warning(
                "activity on %s %s/%s was not recorded before shutdown",
                target.plural,
                target.namespace,
                target.name,
            )

    async def flush(self) -> None:
        """Try to write every pending note now (one patch per object)."""
        for target, note in list(self._pending.items()):
            done = await asyncio.to_thread(self._patch, target, note)
            if done and self._pending.get(target) is note:
                del self._pending[target]

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    def _patch(self, target: Target, note: _Note) -> bool:
        """Write one note; False when it should be tried again, True when written or dropped."""
        try:
            self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                target.namespace,
                target.plural,
                target.name,
                status_patch(note.last_activity, note.tools),
                _request_timeout=self._request_timeout,
            )
        except ApiException as error:
            if error.status == 404:
                return True
            again = error.status is None or error.status == 429 or error.status >= 500
            log.warning(
                "cannot record activity on %s %s/%s%s: %s %s",
                target.plural,
                target.namespace,
                target.name,
                ", will try again" if again else "",
                error.status,
                error.reason,
            )
            return not again
        except API_ERRORS as error:
            log.warning(
                "cannot record activity on %s %s/%s, will try again: %s",
                target.plural,
                target.namespace,
                target.name,
                error,
            )
            return False
        return True
