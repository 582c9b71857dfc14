"""Server-sent events: framing and incremental parsing, as the streamable HTTP transport uses them.

Rule: no I/O. `SSEParser.feed` takes whatever bytes arrived and returns the events completed so
far, so a proxy can pass each event on the moment it is whole.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event. An event with only `id`/`retry` (a priming event) has empty data."""

    data: str = ""
    id: str | None = None
    event: str = "message"
    retry: int | None = None


def encode_event(
    data: str | bytes = b"",
    *,
    event_id: str | None = None,
    event: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Frame one event. Multi-line data becomes several `data:` lines."""
    text = data.decode() if isinstance(data, bytes) else data
    parts: list[str] = []
    if event_id is not None:
        parts.append(f"id: {event_id}\n")
    if event is not None and event != "message":
        parts.append(f"event: {event}\n")
    if retry is not None:
        parts.append(f"retry: {retry}\n")
    if text or not parts:
        parts.extend(f"data: {line}\n" for line in text.splitlines() or [""])
    parts.append("\n")
    return "".join(parts).encode()


def encode(event: SSEEvent) -> bytes:
    """Frame a parsed event again, unchanged."""
    return encode_event(event.data, event_id=event.id, event=event.event, retry=event.retry)


class SSEParser:
    """Incremental parser following the HTML event-stream rules (CR, LF or CRLF line ends)."""

    def __init__(self, *, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._buffer = ""
        self._decoder_tail = b""
        self._data: list[str] = []
        self._id: str | None = None
        self._event = ""
        self._retry: int | None = None
        self._has_fields = False
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume bytes and return the events they complete."""
        raw = self._decoder_tail + chunk
        try:
            text = raw.decode()
            self._decoder_tail = b""
        except UnicodeDecodeError as exc:
            if exc.start < len(raw) - 3:
                raise ValueError("event stream is not UTF-8") from None
            text = raw[: exc.start].decode()
            self._decoder_tail = raw[exc.start :]
        self._buffer += text
        if len(self._buffer) > self._max:
            raise ValueError(f"an event exceeds {self._max} bytes")
        events: list[SSEEvent] = []
        while True:
            line, found = self._take_line()
            if not found:
                break
            event = self._process(line)
            if event is not None:
                events.append(event)
        return events

    def _take_line(self) -> tuple[str, bool]:
        buffer = self._buffer
        newline = buffer.find("\n")
        carriage = buffer.find("\r")
        if carriage == -1 or (newline != -1 and newline < carriage):
            if newline == -1:
                return "", False
            self._buffer = buffer[newline + 1 :]
            return buffer[:newline], True
        if carriage + 1 == len(buffer):
            return "", False
        skip = 2 if buffer[carriage + 1] == "\n" else 1
        self._buffer = buffer[carriage + skip :]
        return buffer[:carriage], True

    def _process(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        self._has_fields = True
        if name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "event":
            self._event = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._has_fields:
            return None
        event = SSEEvent(
            data="\n".join(self._data),
            id=self._id,
            event=self._event or "message",
            retry=self._retry,
        )
        self._data = []
        self._id = None
        self._event = ""
        self._retry = None
        self._has_fields = False
        return event
