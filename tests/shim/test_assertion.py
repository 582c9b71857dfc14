"""Identity assertions: minted by the gateway's key, refused whenever anything is off."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import orjson
import pytest

from corral.common.assertion import (
    MAX_CHECKED_AHEAD,
    AssertionVerifier,
    InvalidAssertionError,
    generate_signing_key,
    mint_assertion,
    public_jwk,
)

ISSUER = "https://gateway.example"
AUDIENCE = "corral:team/github"
KEY = generate_signing_key()
OTHER = generate_signing_key()


def verifier(*keys: object) -> AssertionVerifier:
    jwks = [public_jwk(key) for key in (keys or (KEY,))]  # type: ignore[arg-type]
    return AssertionVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)


def mint(**overrides: object) -> str:
    options: dict[str, object] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "subject": "alice",
        "email": "alice@example.com",
        "groups": ["dev"],
        "client_id": "claude",
    }
    options.update(overrides)
    key = options.pop("key", KEY)
    return mint_assertion(key, **options)  # type: ignore[arg-type]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, object], claims: dict[str, object], signature: bytes) -> str:
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}.{b64(signature)}"


def claims_of(token: str) -> dict[str, object]:
    segment = token.split(".")[1]
    result: dict[str, object] = orjson.loads(base64.urlsafe_b64decode(segment + "=="))
    return result


def test_valid_assertion_gives_the_identity() -> None:
    identity = verifier().verify(mint())
    assert (identity.subject, identity.email, identity.groups, identity.client_id) == (
        "alice",
        "alice@example.com",
        ("dev",),
        "claude",
    )


def test_rotation_accepts_every_configured_key() -> None:
    both = verifier(KEY, OTHER)
    assert both.verify(mint(key=OTHER)).subject == "alice"
    assert both.verify(mint(key=KEY)).subject == "alice"


@pytest.mark.parametrize(
    ("token_factory", "reason"),
    [
        (lambda: mint(key=OTHER), "unknown key"),
        (lambda: mint(key=OTHER, kid=public_jwk(KEY)["kid"]), "does not verify"),
        (lambda: mint(audience="corral:team/other"), "audience"),
        (lambda: mint(issuer="https://evil.example"), "issuer"),
        (lambda: mint(now=time.time() - 120), "expired"),
        (lambda: mint(now=time.time() + 120), "not valid yet"),
        (lambda: mint(lifetime=3600), "lifetime"),
        (lambda: "", "missing"),
        (lambda: "a.b", "three segments"),
    ],
)
def test_bad_assertions_are_refused(token_factory: object, reason: str) -> None:
    with pytest.raises(InvalidAssertionError, match=reason):
        verifier().verify(token_factory())  # type: ignore[operator]


def test_alg_none_and_hs256_are_refused() -> None:
    claims = claims_of(mint())
    none_token = unsigned({"alg": "none", "kid": public_jwk(KEY)["kid"]}, claims, b"")
    with pytest.raises(InvalidAssertionError, match="only ES256"):
        verifier().verify(none_token)
    secret = public_jwk(KEY)["x"].encode()
    header = {"alg": "HS256", "kid": public_jwk(KEY)["kid"]}
    body = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}"
    mac = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidAssertionError, match="only ES256"):
        verifier().verify(f"{body}.{b64(mac)}")


def test_tampered_claims_fail_the_signature() -> None:
    token = mint()
    claims = claims_of(token)
    claims["sub"] = "root"
    header, _, signature = token.split(".")
    forged = f"{header}.{b64(orjson.dumps(claims))}.{signature}"
    with pytest.raises(InvalidAssertionError, match="does not verify"):
        verifier().verify(forged)


def test_replayed_jti_is_refused() -> None:
    check = verifier()
    token = mint()
    check.verify(token)
    with pytest.raises(InvalidAssertionError, match="replayed"):
        check.verify(token)


def test_private_keys_are_not_accepted_as_verification_keys() -> None:
    with pytest.raises(ValueError, match="private"):
        AssertionVerifier([{**public_jwk(KEY), "d": "x"}], issuer=ISSUER, audience=AUDIENCE)


def refuse_signatures(*_: object) -> None:
    raise InvalidAssertionError("the signature was checked again")


def test_an_assertion_checked_ahead_skips_only_the_signature_and_only_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check = verifier()
    token = mint()
    check.check_ahead(token, "alice")
    check.check_ahead(token, "alice")
    assert check.checked_ahead == 1
    monkeypatch.setattr(AssertionVerifier, "_check_signature", staticmethod(refuse_signatures))
    assert check.verify(token).subject == "alice"
    assert check.checked_ahead == 0
    with pytest.raises(InvalidAssertionError, match="checked again"):
        check.verify(token)
    monkeypatch.undo()
    with pytest.raises(InvalidAssertionError, match="replayed"):
        check.verify(token)


def test_the_claims_of_an_assertion_checked_ahead_are_checked_when_it_is_presented() -> None:
    now = [time.time()]
    check = AssertionVerifier(
        [public_jwk(KEY)], issuer=ISSUER, audience=AUDIENCE, clock=lambda: now[0]
    )
    late = mint(lifetime=10, now=now[0])
    elsewhere = mint(audience="corral:team/other")
    committed = mint(secret="its-own-secret")
    for token in (late, elsewhere, committed):
        check.check_ahead(token, "alice")
    assert check.checked_ahead == 3
    with pytest.raises(InvalidAssertionError, match="audience"):
        check.verify(elsewhere)
    for secret in (None, "another-secret", "not utf-8 \udcff", "\u00e9"):
        with pytest.raises(InvalidAssertionError, match="without the secret"):
            check.verify(committed, secret)
    assert check.verify(committed, "its-own-secret").subject == "alice"
    now[0] += 60
    with pytest.raises(InvalidAssertionError, match="expired"):
        check.verify(late)


@pytest.mark.parametrize(
    ("token_factory", "reason"),
    [
        (lambda: mint()[:-6] + "AAAAAA", "does not verify"),
        (lambda: mint(key=OTHER), "unknown key"),
        (lambda: mint(subject="mallory"), "another subject"),
        (lambda: unsigned({"alg": "none"}, claims_of(mint()), b""), "only ES256"),
        (lambda: "not.a-token", "three segments"),
    ],
    ids=["bad-signature", "unknown-key", "another-subject", "alg-none", "malformed"],
)
def test_check_ahead_keeps_nothing_that_fails(token_factory: object, reason: str) -> None:
    check = verifier()
    token = token_factory()  # type: ignore[operator]
    with pytest.raises(InvalidAssertionError, match=reason):
        check.check_ahead(token, "alice")
    assert check.checked_ahead == 0


def test_check_ahead_holds_a_bounded_number_and_skips_used_assertions() -> None:
    check = verifier()
    used = mint()
    check.verify(used)
    check.check_ahead(used, "alice")
    assert check.checked_ahead == 0
    tokens = [mint() for _ in range(MAX_CHECKED_AHEAD + 3)]
    for token in tokens:
        check.check_ahead(token, "alice")
    assert check.checked_ahead == MAX_CHECKED_AHEAD
    assert check.verify(tokens[0]).subject == "alice"  # dropped first: checked in full now
    assert check.checked_ahead == MAX_CHECKED_AHEAD
    assert check.verify(tokens[-1]).subject == "alice"
    assert check.checked_ahead == MAX_CHECKED_AHEAD - 1
