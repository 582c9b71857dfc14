"""Assertions signed ahead (corral.gateway.signing): a spare is one request's own assertion, for
that caller and server only, handed out once and only while it is young."""

from __future__ import annotations

import time

import pytest

from corral.common.assertion import AssertionVerifier, generate_signing_key
from corral.gateway.authn import Principal
from corral.gateway.signing import (
    MAX_SPARES,
    PREPARED_PER_WAIT,
    SPARE_MAX_AGE,
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
    assert signer.spares == 0
    signer.prepare()
    assert signer.spares == 1
    second = signer.mint(ALICE, AUDIENCE)
    assert signer.spares_used == 1
    assert signer.spares == 0
    check = verifier(signer)
    identities = [check.verify(token) for token in (first, second)]
    assert [i.subject for i in identities] == ["alice", "alice"]
    assert identities[1].groups == ("dev",)
    assert identities[1].email == "alice@example.com"
    assert identities[1].client_id == "cli"
    assert identities[0].jti != identities[1].jti


def test_a_spare_is_handed_out_once(signer: AssertionSigner) -> None:
    signer.mint(ALICE, AUDIENCE)
    signer.prepare()
    tokens = [signer.mint(ALICE, AUDIENCE) for _ in range(3)]
    assert signer.spares_used == 1
    assert len(set(tokens)) == 3
    check = verifier(signer)
    assert len({check.verify(token).jti for token in tokens}) == 3


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
    token = signer.mint(caller, target)
    assert signer.spares_used == 0
    identity = verifier(signer, target).verify(token)
    assert identity.subject == caller.user
    assert identity.groups == caller.groups
    assert signer.spares == 1  # alice's spare for the first server is still hers


def test_a_spare_older_than_the_limit_is_dropped_for_a_fresh_one(
    signer: AssertionSigner, clock: Clock
) -> None:
    signer.mint(ALICE, AUDIENCE)
    signer.prepare()
    clock.now += SPARE_MAX_AGE + 0.5
    issued = time.time()
    token = signer.mint(ALICE, AUDIENCE)
    assert signer.spares_used == 0
    assert signer.spares == 0
    claims = verifier(signer).verify(token).claims
    assert claims["iat"] >= int(issued)


def test_spares_are_signed_a_few_per_wait_and_held_in_bounded_number(
    signer: AssertionSigner,
) -> None:
    callers = [Principal(user=f"user{n}") for n in range(PREPARED_PER_WAIT + 3)]
    for caller in callers:
        signer.mint(caller, AUDIENCE)
    signer.prepare()
    assert signer.spares == PREPARED_PER_WAIT
    signer.prepare()
    assert signer.spares == len(callers)
    signer.prepare()  # nothing wanted: nothing signed
    assert signer.spares == len(callers)

    many = [Principal(user=f"many{n}") for n in range(MAX_SPARES + 10)]
    for caller in many:
        signer.mint(caller, AUDIENCE)
    for _ in range(MAX_SPARES // PREPARED_PER_WAIT + 2):
        signer.prepare()
    assert signer.spares == MAX_SPARES
