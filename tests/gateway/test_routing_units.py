"""Pure parts of the front door, without sockets: sealed session ids (rotation, binding,
expiry), route shapes, origins, request ids and the per-user token bucket."""

from __future__ import annotations

import os

import pytest

from corral.gateway.edge import RateLimiter, origin_allowed, valid_route
from corral.gateway.sessions import SessionCodec


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_session_ids_open_only_on_their_route_and_survive_key_rotation() -> None:
    old, new = os.urandom(32), os.urandom(32)
    before = SessionCodec([old])
    sealed = before.seal(before.new_ref("upstream-1", "http://shim/mcp", "alice"), "team/a")
    ref = before.open(sealed, "team/a")
    assert ref is not None
    assert (ref.upstream_id, ref.instance, ref.subject) == (
        "upstream-1",
        "http://shim/mcp",
        "alice",
    )
    assert before.open(sealed, "team/b") is None
    rotated = SessionCodec([new, old])
    assert rotated.open(sealed, "team/a") == ref
    resealed = rotated.seal(ref, "team/a")
    assert before.open(resealed, "team/a") is None
    assert SessionCodec([new]).open(sealed, "team/a") is None
    assert "upstream-1" not in sealed
    assert "alice" not in sealed


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "v1",
        "v1..",
        "v2.abc.def",
        "v1.unknown.AAAA",
        "v1.{kid}.",
        "v1.{kid}.@@@",
        "v1.{kid}.AAAA",
    ],
)
def test_malformed_session_ids_do_not_open(presented: str) -> None:
    codec = SessionCodec([os.urandom(32)])
    kid = codec.seal(codec.new_ref("u", "i", "s"), "r").split(".")[1]
    assert codec.open(presented.replace("{kid}", kid), "r") is None


def test_session_ids_expire_after_max_age() -> None:
    clock = Clock()
    codec = SessionCodec([os.urandom(32)], max_age=60, clock=clock)
    sealed = codec.seal(codec.new_ref("u", "i", "alice"), "r")
    clock.now += 59
    assert codec.open(sealed, "r") is not None
    clock.now += 2
    assert codec.open(sealed, "r") is None


def test_a_remembered_session_id_keeps_its_route_binding_and_its_age() -> None:
    clock = Clock()
    codec = SessionCodec([os.urandom(32)], max_age=60, clock=clock)
    sealed = codec.seal(codec.new_ref("u", "i", "alice"), "team/a")
    for _ in range(3):
        ref = codec.open(sealed, "team/a")
        assert ref is not None
        assert ref.subject == "alice"
    assert codec.open(sealed, "team/b") is None
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    assert codec.open(tampered, "team/a") is None
    clock.now += 61
    assert codec.open(sealed, "team/a") is None
    assert codec.open(sealed, "team/a") is None


def test_session_ids_open_the_same_after_the_remembered_ones_are_pushed_out() -> None:
    key = os.urandom(32)
    sealer = SessionCodec([key])
    ids = {user: sealer.seal(sealer.new_ref("u-" + user, "i", user), "r") for user in "abcde"}
    codec = SessionCodec([key], remembered=2)
    for _ in range(2):
        for user, sealed in ids.items():
            ref = codec.open(sealed, "r")
            assert ref is not None
            assert (ref.subject, ref.upstream_id) == (user, "u-" + user)


def test_session_keys_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32"):
        SessionCodec([b"short"])
    with pytest.raises(ValueError, match="at least one"):
        SessionCodec([])


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/mcp/team/everything", ("team", "everything")),
        ("/mcp/team-a/github.v2?x=1", ("team-a", "github.v2")),
        ("/mcp/team/../everything", None),
        ("/mcp/team/a..b", None),
        ("/mcp/team/-a", None),
        ("/mcp/team/a%2Fb", None),
        ("/mcp/Team/a", None),
        ("/mcp/team", None),
        ("/mcp/team/a/b", None),
        ("/mcp/team/" + "a" * 254, None),
    ],
)
def test_only_plain_routes_are_valid(path: str, route: tuple[str, str] | None) -> None:
    assert valid_route(path) == route


def test_origins() -> None:
    allowed = ["https://corral.example.com/", "https://console.example.com"]
    assert origin_allowed(None, allowed)
    assert origin_allowed("https://Corral.Example.com", allowed)
    assert not origin_allowed("https://corral.example.com:8443", allowed)
    assert not origin_allowed("https://evil.example.com", allowed)


def test_the_token_bucket_refills_at_its_rate_per_user() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("alice") == pytest.approx(0.5)
    assert limiter.take("bob") == 0.0
    clock.now += 0.5
    assert limiter.take("alice") == 0.0
    assert limiter.take("alice") > 0
    clock.now += 100
    assert [limiter.take("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
