"""Assertions signed ahead (corral.gateway.signing): a spare is one request's own assertion, for
that caller and server only, handed out once and only while it is young, sent ahead once, and
accepted only with the secret its own request carries."""

from __future__ import annotations

import itertools
import time

import pytest

from corral.common.assertion import (
    AssertionVerifier,
    InvalidAssertionError,
    generate_signing_key,
)
from corral.gateway.authn import Principal
from corral.gateway.signing import (
    MAX_SPARES,
    PREPARED_PER_WAIT,
    SPARE_MAX_AGE,
    SPARES_PER_CALLER,
    AssertionSigner,
)

ISSUER = "https://corral.test"
AUDIENCE = "corral:tools/everything"
ALICE = Principal(user="alice", email="alice@example.com", groups=("dev",), client_id="cli")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def signer(clock: Clock) -> AssertionSigner:
    return AssertionSigner([generate_signing_key()], issuer=ISSUER, clock=clock)


def verifier(signer: AssertionSigner, audience: str = AUDIENCE) -> AssertionVerifier:
    return AssertionVerifier(signer.jwks()["keys"], issuer=ISSUER, audience=audience)


def test_the_next_request_takes_the_spare_signed_while_the_last_one_waited(
    signer: AssertionSigner,
) -> None:
    first = signer.mint(ALICE, AUDIENCE)
    assert (first.secret, first.ahead) == (None, None)
    assert signer.spares == 0
    signer.prepare()
    assert signer.spares == SPARES_PER_CALLER == 2
    second = signer.mint(ALICE, AUDIENCE)
    assert signer.spares_used == 1
    assert signer.spares == 1
    third = signer.mint(ALICE, AUDIENCE)  # takes the spare sent ahead with the second
    assert third.assertion == second.ahead
    assert third.ahead is None
    check = verifier(signer)
    identities = [
        check.verify(minted.assertion, minted.secret) for minted in (first, second, third)
    ]
    assert [i.subject for i in identities] == ["alice"] * 3
    assert identities[1].groups == ("dev",)
    assert identities[1].email == "alice@example.com"
    assert identities[1].client_id == "cli"
    assert len({i.jti for i in identities}) == 3


def test_a_spare_is_accepted_only_with_the_secret_its_own_request_carries(
    signer: AssertionSigner,
) -> None:
    signer.mint(ALICE, AUDIENCE)
    signer.prepare()
    current = signer.mint(ALICE, AUDIENCE)
    assert current.secret is not None
    assert current.ahead is not None
    following = signer.mint(ALICE, AUDIENCE)
    assert following.secret is not None
    assert following.secret != current.secret
    check = verifier(signer)
    for secret in (None, current.secret, following.secret + "x"):
        with pytest.raises(InvalidAssertionError, match="without the secret"):
            check.verify(current.ahead, secret)
    assert check.verify(following.assertion, following.secret).subject == "alice"


def test_a_spare_is_handed_out_and_sent_ahead_once(signer: AssertionSigner) -> None:
    signer.mint(ALICE, AUDIENCE)
    signer.prepare()
    minted = [signer.mint(ALICE, AUDIENCE) for _ in range(4)]
    assert signer.spares_used == SPARES_PER_CALLER
    assert len({m.assertion for m in minted}) == 4
    assert [m.ahead is not None for m in minted] == [True, False, False, False]
    check = verifier(signer)
    assert len({check.verify(m.assertion, m.secret).jti for m in minted}) == 4


@pytest.mark.parametrize(
    ("caller", "audience"),
    [
        (Principal(user="bob", email="alice@example.com", groups=("dev",), client_id="cli"), None),
        (Principal(user="alice", email="alice@example.com", groups=(), client_id="cli"), None),
        (Principal(user="alice", email="alice@example.com", groups=("dev",), client_id=""), None),
        (ALICE, "corral:tools/other"),
    ],
    ids=["another-user", "other-groups", "another-client", "another-server"],
)
def test_a_spare_never_serves_another_caller_or_server(
    signer: AssertionSigner, caller: Principal, audience: str | None
) -> None:
    signer.mint(ALICE, AUDIENCE)
    signer.prepare()
    target = audience or AUDIENCE
    minted = signer.mint(caller, target)
    assert signer.spares_used == 0
    assert (minted.secret, minted.ahead) == (None, None)
    identity = verifier(signer, target).verify(minted.assertion)
    assert identity.subject == caller.user
    assert identity.groups == caller.groups
    assert signer.spares == SPARES_PER_CALLER  # alice's spares for the first server stay hers


def test_spares_older_than_the_limit_are_dropped_for_a_fresh_one(
    signer: AssertionSigner, clock: Clock
) -> None:
    signer.mint(ALICE, AUDIENCE)
    signer.prepare()
    clock.now += SPARE_MAX_AGE + 0.5
    issued = time.time()
    minted = signer.mint(ALICE, AUDIENCE)
    assert signer.spares_used == 0
    assert signer.spares == 0
    assert (minted.secret, minted.ahead) == (None, None)
    claims = verifier(signer).verify(minted.assertion).claims
    assert claims["iat"] >= int(issued)


def test_spares_are_signed_a_few_per_wait_and_held_in_bounded_number(
    signer: AssertionSigner,
) -> None:
    callers = [Principal(user=f"user{n}") for n in range(PREPARED_PER_WAIT + 3)]
    for caller in callers:
        signer.mint(caller, AUDIENCE)
    held = [signer.spares]
    for _ in range(4):
        signer.prepare()
        held.append(signer.spares)
    assert all(0 <= b - a <= PREPARED_PER_WAIT for a, b in itertools.pairwise(held))
    assert held[-1] == held[-2] == SPARES_PER_CALLER * len(callers)

    many = [Principal(user=f"many{n}") for n in range(MAX_SPARES + 10)]
    for caller in many:
        signer.mint(caller, AUDIENCE)
    for _ in range(SPARES_PER_CALLER * MAX_SPARES // PREPARED_PER_WAIT + 4):
        signer.prepare()
    assert signer.spares == SPARES_PER_CALLER * MAX_SPARES
