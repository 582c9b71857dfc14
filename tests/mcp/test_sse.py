"""SSE framing and parsing, whatever way the bytes are split."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.mcp.sse import SSEEvent, SSEParser, encode, encode_event


def test_parses_fields_comments_and_line_endings() -> None:
    stream = b": comment\r\nid: 1\r\ndata: a\r\ndata: b\r\n\r\nretry: 500\rid: 2\r\r\n"
    events = SSEParser().feed(stream)
    assert events == [SSEEvent(data="a\nb", id="1"), SSEEvent(data="", id="2", retry=500)]


def test_event_id_belongs_to_one_event_only() -> None:
    events = SSEParser().feed(b"id: 1\ndata: a\n\ndata: b\n\n")
    assert [event.id for event in events] == ["1", None]


def test_priming_event_round_trips() -> None:
    assert encode_event(event_id="p1") == b"id: p1\n\n"
    assert SSEParser().feed(encode_event(event_id="p1", retry=10)) == [SSEEvent(id="p1", retry=10)]


events_strategy = st.lists(
    st.builds(
        SSEEvent,
        data=st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1),
        id=st.none() | st.text(alphabet="abc123", min_size=1),
        event=st.sampled_from(["message", "other"]),
        retry=st.none() | st.integers(0, 10_000),
    ),
    max_size=5,
)


@given(events_strategy, st.integers(1, 7))
def test_any_chunking_gives_the_same_events(events: list[SSEEvent], size: int) -> None:
    wire = b"".join(encode(event) for event in events)
    parser = SSEParser()
    parsed: list[SSEEvent] = []
    for start in range(0, len(wire), size):
        parsed.extend(parser.feed(wire[start : start + size]))
    assert parsed == events
