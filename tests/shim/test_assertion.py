"""Identity assertions: minted by the gateway's key, refused whenever anything is off."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from corral.common.assertion import (
    MAX_SECRETS,
    MAX_VERIFIED,
    AssertionVerifier,
    InvalidAssertionError,
    UsedIds,
    generate_signing_key,
    mint_assertion,
    public_jwk,
    use_of,
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


def test_every_secret_of_an_assertion_is_used_once_in_any_order() -> None:
    used = UsedIds()
    order = [5, 0, MAX_SECRETS - 1, 17, 1]
    for index in order:
        used.use_secret("a", index, until=100, now=10)
    for index in order:
        with pytest.raises(InvalidAssertionError, match="replayed"):
            used.use_secret("a", index, until=100, now=10)
    used.use_secret("b", 5, until=100, now=10)  # another assertion's uses are its own
    used.use("a", until=100, now=10)  # and so is a plain assertion's jti
    with pytest.raises(InvalidAssertionError, match="replayed"):
        used.use("a", until=100, now=10)
    assert len(used) == 3


def test_used_ids_are_forgotten_only_once_their_assertion_has_expired() -> None:
    used = UsedIds()
    used.use("plain", until=20, now=10)
    used.use_secret("early", 0, until=30, now=10)
    used.use_secret("late", 0, until=60, now=10)
    used.use_secret("early", 1, until=30, now=25)
    with pytest.raises(InvalidAssertionError, match="replayed"):
        used.use_secret("early", 0, until=30, now=30)  # not yet expired at its last second
    assert len(used) == 2  # "plain" is gone: nothing can present it after its expiry anyway
    used.use_secret("late", 1, until=60, now=31)
    assert len(used) == 1
    with pytest.raises(InvalidAssertionError, match="replayed"):
        used.use_secret("late", 0, until=60, now=60)


def test_a_used_secret_is_never_accepted_again_as_time_passes() -> None:
    """Uses are forgotten only once the assertion itself is refused as expired."""
    now = [1_000_000.0]
    used = UsedIds()
    check = AssertionVerifier(
        [public_jwk(KEY)],
        issuer=ISSUER,
        audience=AUDIENCE,
        clock=lambda: now[0],
        leeway=5,
        used=used,
    )
    token, uses = with_secrets(3, now=now[0], lifetime=30)
    check.verify(token, uses[0])
    reasons = []
    for _ in range(60):
        now[0] += 1
        with pytest.raises(InvalidAssertionError) as refused:
            check.verify(token, uses[0])
        reasons.append("replayed" if "replayed" in str(refused.value) else str(refused.value))
    expired = reasons.index("assertion expired")
    assert set(reasons[:expired]) == {"replayed"}
    assert set(reasons[expired:]) == {"assertion expired"}
    fresh, fresh_uses = with_secrets(1, now=now[0], lifetime=30)
    check.verify(fresh, fresh_uses[0])
    assert len(used) == 1, "the expired assertion's uses are forgotten at the next use"


def test_verifiers_sharing_used_ids_refuse_a_secret_the_other_accepted() -> None:
    used = UsedIds()
    first, second = (
        AssertionVerifier([public_jwk(KEY)], issuer=ISSUER, audience=AUDIENCE, used=used)
        for _ in range(2)
    )
    token, uses = with_secrets(2)
    first.verify(token, uses[0])
    with pytest.raises(InvalidAssertionError, match="replayed"):
        second.verify(token, uses[0])
    assert second.verify(token, uses[1]).subject == "alice"


def test_private_keys_are_not_accepted_as_verification_keys() -> None:
    with pytest.raises(ValueError, match="private"):
        AssertionVerifier([{**public_jwk(KEY), "d": "x"}], issuer=ISSUER, audience=AUDIENCE)


def resign(signing_input: str) -> bytes:
    """An ES256 signature by the trusted key over claims the test wrote."""
    r, s = decode_dss_signature(KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def with_secrets(count: int = 4, **overrides: object) -> tuple[str, list[str]]:
    """An assertion for ``count`` requests, and the `SECRET_HEADER` value of each."""
    batch = [f"secret-{n}" for n in range(count)]
    return mint(secrets=batch, **overrides), [use_of(n, s) for n, s in enumerate(batch)]


def test_an_assertion_commits_to_the_first_half_of_each_secrets_sha256() -> None:
    token, _ = with_secrets(2)
    expected = [b64(hashlib.sha256(f"secret-{n}".encode()).digest()[:16]) for n in range(2)]
    assert claims_of(token)["secrets_sha256"] == expected


def test_a_secret_sharing_only_part_of_the_committed_digest_is_refused() -> None:
    """The shim compares all 16 committed bytes, not a prefix of them."""
    secret = "secret-0"
    digest = hashlib.sha256(secret.encode()).digest()[:16]
    near = b64(digest[:15] + bytes([digest[15] ^ 1]))
    token = mint()
    claims = {**claims_of(token), "secrets_sha256": [near]}
    header = orjson.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}"
    forged = f"{signing_input}.{b64(resign(signing_input))}"
    with pytest.raises(InvalidAssertionError, match="without a secret it commits to"):
        verifier().verify(forged, use_of(0, secret))


def test_an_assertion_with_secrets_is_checked_in_full_once_then_each_use_once() -> None:
    check = verifier()
    token, uses = with_secrets()
    assert check.verify(token, uses[2]).subject == "alice"
    assert (check.remembered, check.signatures_checked) == (1, 1)
    assert [check.verify(token, use).subject for use in (uses[0], uses[3], uses[1])] == [
        "alice"
    ] * 3
    assert check.signatures_checked == 1
    for use in uses:
        with pytest.raises(InvalidAssertionError, match="replayed"):
            check.verify(token, use)
    tampered = token[:-6] + "AAAAAA"  # not the token remembered: checked in full
    with pytest.raises(InvalidAssertionError, match="signature does not verify"):
        check.verify(tampered, uses[0])
    assert check.signatures_checked == 2


def test_a_remembered_signature_under_other_claims_is_checked_in_full() -> None:
    check = verifier()
    token, uses = with_secrets(subject="alice")
    check.verify(token, uses[0])  # remembered now, by its signature segment
    header, _, signature = token.split(".")
    claims = {**claims_of(token), "sub": "root"}
    forged = f"{header}.{b64(orjson.dumps(claims))}.{signature}"
    with pytest.raises(InvalidAssertionError, match="does not verify"):
        check.verify(forged, uses[1])
    assert check.verify(token, uses[1]).subject == "alice"  # the forgery used nothing up
    assert check.remembered == 1


@pytest.mark.parametrize(
    "use",
    [
        None,
        "",
        "secret-0",
        "0.secret-1",
        "0.secret-0x",
        "4.secret-4",
        "99.secret-0",
        "-1.secret-0",
        "\u0660.secret-0",
        "0.",
        ".secret-0",
        "0.not utf-8 \udcff",
    ],
)
def test_a_use_without_its_own_secret_is_refused(use: str | None) -> None:
    check = verifier()
    token, uses = with_secrets()
    with pytest.raises(InvalidAssertionError, match="secret"):
        check.verify(token, use)
    assert check.verify(token, uses[0]).subject == "alice"  # nothing was used up


def test_the_claims_of_a_remembered_assertion_are_checked_on_every_use() -> None:
    now = [time.time()]
    check = AssertionVerifier(
        [public_jwk(KEY)], issuer=ISSUER, audience=AUDIENCE, clock=lambda: now[0]
    )
    token, uses = with_secrets(lifetime=10, now=now[0])
    check.verify(token, uses[0])
    now[0] += 60
    with pytest.raises(InvalidAssertionError, match="expired"):
        check.verify(token, uses[1])
    elsewhere, other_uses = with_secrets(audience="corral:team/other")
    with pytest.raises(InvalidAssertionError, match="audience"):
        verifier().verify(elsewhere, other_uses[0])


@pytest.mark.parametrize(
    ("digests", "reason"),
    [
        ([], "a list of digests"),
        ("one", "a list of digests"),
        ([1, 2], "a list of digests"),
        (["x"] * (MAX_SECRETS + 1), "a list of digests"),
        (["a+b/" * 11], "not base64url"),
        ([b64(bytes(8))], "digest of 8 bytes"),
        ([b64(bytes(32))], "digest of 32 bytes, not the 16 this shim takes"),
    ],
    ids=[
        "empty",
        "not-a-list",
        "not-strings",
        "too-many",
        "not-base64url",
        "short-digest",
        "whole-sha256-of-an-older-gateway",
    ],
)
def test_a_malformed_list_of_secrets_is_refused(digests: object, reason: str) -> None:
    token = mint()
    claims = {**claims_of(token), "secrets_sha256": digests}
    header = orjson.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}"
    signature = resign(signing_input)
    with pytest.raises(InvalidAssertionError, match=reason):
        verifier().verify(f"{signing_input}.{b64(signature)}", "0.secret-0")


def test_a_single_secret_commitment_of_an_older_gateway_is_refused() -> None:
    token = mint()
    claims = {**claims_of(token), "secret_sha256": "x"}
    header = orjson.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}"
    with pytest.raises(InvalidAssertionError, match="versions differ"):
        verifier().verify(f"{signing_input}.{b64(resign(signing_input))}", "x")


def test_remembered_assertions_are_bounded() -> None:
    check = verifier()
    batches = [with_secrets(2) for _ in range(MAX_VERIFIED + 3)]
    for token, uses in batches:
        check.verify(token, uses[0])
    assert check.remembered == MAX_VERIFIED
    token, uses = batches[0]  # forgotten first: checked in full again, its use still once
    assert check.verify(token, uses[1]).subject == "alice"
    with pytest.raises(InvalidAssertionError, match="replayed"):
        check.verify(token, uses[0])
