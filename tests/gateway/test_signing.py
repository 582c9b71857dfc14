"""Assertions for a run of requests (corral.gateway.signing): one signature serves one caller's
requests to one server, each request with a secret of its own that the shim accepts once; an
assertion never serves another caller or server, nor once it is used up or too old, and the
next one is signed while a request waits."""

from __future__ import annotations

import base64
import itertools
import time

import pytest

from corral.common.assertion import (
    SECRET_BYTES,
    AssertionVerifier,
    InvalidAssertionError,
    generate_signing_key,
    new_secrets,
)
from corral.gateway.authn import Principal
from corral.gateway.signing import (
    MAX_CALLERS,
    PREPARED_PER_WAIT,
    SECRETS_PER_ASSERTION,
    AssertionSigner,
    Minted,
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


def test_one_signature_serves_a_run_of_requests_each_with_its_own_use(
    signer: AssertionSigner,
) -> None:
    minted = [signer.mint(ALICE, AUDIENCE) for _ in range(SECRETS_PER_ASSERTION)]
    assert signer.signed == 1
    assert len({m.assertion for m in minted}) == 1
    assert len({m.secret for m in minted}) == SECRETS_PER_ASSERTION
    check = verifier(signer)
    identities = [check.verify(m.assertion, m.secret) for m in reversed(minted)]  # any order
    assert {i.subject for i in identities} == {"alice"}
    assert identities[0].groups == ("dev",)
    assert identities[0].email == "alice@example.com"
    assert identities[0].client_id == "cli"
    assert check.remembered == 1
    for m in minted:
        with pytest.raises(InvalidAssertionError, match="replayed"):
            check.verify(m.assertion, m.secret)


def test_a_used_up_assertion_is_followed_by_a_new_one(signer: AssertionSigner) -> None:
    minted = [signer.mint(ALICE, AUDIENCE) for _ in range(SECRETS_PER_ASSERTION + 1)]
    assert signer.signed == 2
    assert minted[-1].assertion != minted[0].assertion
    check = verifier(signer)
    assert [check.verify(m.assertion, m.secret).subject for m in minted] == ["alice"] * len(minted)


def test_the_next_assertion_is_signed_while_a_request_waits(signer: AssertionSigner) -> None:
    minted = [signer.mint(ALICE, AUDIENCE) for _ in range(SECRETS_PER_ASSERTION)]
    assert signer.signed == 1
    signer.prepare()  # the current one is running out
    assert signer.signed == 2
    following = signer.mint(ALICE, AUDIENCE)
    assert signer.signed == 2  # taken, not signed on the request's path
    assert following.assertion != minted[0].assertion
    assert verifier(signer).verify(following.assertion, following.secret).subject == "alice"


def test_a_use_is_accepted_only_with_its_own_secret(signer: AssertionSigner) -> None:
    first, second = signer.mint(ALICE, AUDIENCE), signer.mint(ALICE, AUDIENCE)
    index, _, secret = first.secret.partition(".")
    other_secret = second.secret.partition(".")[2]
    check = verifier(signer)
    for stolen in (None, "", secret, f"{index}.{other_secret}", f"{index}.{secret}x"):
        with pytest.raises(InvalidAssertionError, match="secret"):
            check.verify(first.assertion, stolen)
    assert check.verify(first.assertion, first.secret).subject == "alice"


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
def test_an_assertion_never_serves_another_caller_or_server(
    signer: AssertionSigner, caller: Principal, audience: str | None
) -> None:
    alices = signer.mint(ALICE, AUDIENCE)
    target = audience or AUDIENCE
    minted = signer.mint(caller, target)
    assert signer.signed == 2
    assert minted.assertion != alices.assertion
    identity = verifier(signer, target).verify(minted.assertion, minted.secret)
    assert identity.subject == caller.user
    assert identity.groups == caller.groups
    assert signer.mint(ALICE, AUDIENCE).assertion == alices.assertion  # alice's stays hers


def test_an_assertion_older_than_the_limit_is_replaced(
    signer: AssertionSigner, clock: Clock
) -> None:
    first = signer.mint(ALICE, AUDIENCE)
    clock.now += signer.max_age / 2 + 0.5
    signer.mint(ALICE, AUDIENCE)
    signer.prepare()  # getting old: the next one is signed ahead
    assert signer.signed == 2
    clock.now += signer.max_age + 1
    signer.prepare()
    issued = time.time()
    minted = signer.mint(ALICE, AUDIENCE)
    assert minted.assertion != first.assertion
    assert signer.signed == 3  # the one signed ahead had grown too old as well
    claims = verifier(signer).verify(minted.assertion, minted.secret).claims
    assert claims["iat"] >= int(issued)


def test_assertions_are_signed_a_few_per_wait_and_held_in_bounded_number(
    signer: AssertionSigner,
) -> None:
    callers = [Principal(user=f"user{n}") for n in range(PREPARED_PER_WAIT + 3)]
    for caller in callers:
        for _ in range(SECRETS_PER_ASSERTION):
            signer.mint(caller, AUDIENCE)
    signed = [signer.signed]
    for _ in range(4):
        signer.prepare()
        signed.append(signer.signed)
    assert all(0 <= b - a <= PREPARED_PER_WAIT for a, b in itertools.pairwise(signed))
    assert signed[-1] == signed[-2] == 2 * len(callers)
    assert signer.held == 2 * len(callers)

    many = [Principal(user=f"many{n}") for n in range(MAX_CALLERS + 10)]
    for caller in many:
        signer.mint(caller, AUDIENCE)
    assert signer.held <= 2 * MAX_CALLERS


def test_minted_uses_name_their_index() -> None:
    signer = AssertionSigner([generate_signing_key()], issuer=ISSUER)
    uses: list[Minted] = [signer.mint(ALICE, AUDIENCE) for _ in range(3)]
    assert [m.secret.partition(".")[0] for m in uses] == ["0", "1", "2"]


def test_secrets_are_distinct_random_base64url_of_sixteen_bytes() -> None:
    drawn = new_secrets(SECRETS_PER_ASSERTION) + new_secrets(SECRETS_PER_ASSERTION)
    assert len(set(drawn)) == len(drawn) == 2 * SECRETS_PER_ASSERTION
    for secret in drawn:
        assert len(base64.urlsafe_b64decode(secret + "==")) == SECRET_BYTES
        assert "=" not in secret
