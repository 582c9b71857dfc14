"""Identity assertions: the short-lived ES256 JWT the gateway mints and every shim verifies.

The shim accepts a request only with a valid assertion (`AssertionVerifier.verify`). Only ES256 is
accepted: `alg: none`, HMAC and every other algorithm are refused before any key is touched.
Checked: signature against a key from the configured JWKS (several keys at once, for rotation,
selected by `kid`), `iss`, `aud` (exactly `corral:{namespace}/{server}`), `exp`, `nbf`, `iat`, a
lifetime of at most `max_lifetime` seconds, and single use.

Claims: `sub`, `email`, `groups`, `client_id` (the OAuth client or API key the caller used),
plus `client_name`/`client_version` when the gateway knows them.

An assertion is used once. A plain one (`mint_assertion` without `secrets`) is single use by its
`jti`. One minted with `secrets` commits to a list of them (claim `secrets_sha256`, the first
16 bytes of each one's SHA-256, as OpenID Connect's `at_hash` keeps half of a digest) and serves
one request per secret: each request carries the same token and, in
`SECRET_HEADER`, the index and the secret of one use (`"3.<secret>"`), accepted once. A secret
travels only with its own request, so whoever sees the token, or a secret already used, can make
no request of their own with it. The gateway signs such an assertion for a run of one caller's
requests to one server. The shim checks its signature and claims on the first of them and keeps
what they vouch for, keyed by the exact token (`MAX_VERIFIED` tokens): the same bytes pass those
checks the same way every time. The time limits and the single use of each secret are checked on
every request.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from secrets import token_urlsafe
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

ASSERTION_HEADER = "Corral-Identity-Assertion"
"""The HTTP header that carries the assertion from the gateway to the shim."""
SECRET_HEADER = "Corral-Identity-Assertion-Secret"
"""The header with the use of an assertion a request makes: `<index>.<secret>`, the secret whose
digest is at that index in the assertion's `secrets_sha256` claim."""
MAX_SECRETS = 64
SECRET_BYTES = 16
MAX_VERIFIED = 1024
MAX_LIFETIME_SECONDS = 60
ALGORITHM = "ES256"
_COORDINATE_BYTES = 32
_DIGEST_BYTES = 16
"""How much of each secret's SHA-256 an assertion commits to: a secret is 16 random bytes, so
finding another value with the same 16-byte digest is no easier than guessing the secret."""
MAX_REMEMBERED_HEADERS = 64
_ES256 = ec.ECDSA(hashes.SHA256())


class InvalidAssertionError(Exception):
    """The assertion is missing, malformed, or fails a check; the message says which."""


def audience_for(namespace: str, server: str) -> str:
    """The audience of assertions for one server."""
    return f"corral:{namespace}/{server}"


@dataclass(frozen=True)
class Identity:
    """Who the gateway says is calling, from a verified assertion."""

    subject: str
    email: str | None
    groups: tuple[str, ...]
    client_id: str | None
    client_name: str | None
    client_version: str | None
    jti: str
    expires_at: int
    claims: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64url_decode(text: str) -> bytes:
    if "+" in text or "/" in text:
        raise InvalidAssertionError("malformed assertion: bad base64url segment")
    try:
        return binascii.a2b_base64(
            (text + "=" * (-len(text) % 4)).encode("ascii").translate(_FROM_URLSAFE),
            strict_mode=True,
        )
    except (ValueError, TypeError) as exc:
        raise InvalidAssertionError("malformed assertion: bad base64url segment") from exc


def _int_to_b64(value: int) -> str:
    return _b64url(value.to_bytes(_COORDINATE_BYTES, "big"))


def public_jwk(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK of a P-256 key, with its RFC 7638 thumbprint as `kid`."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    numbers = public.public_numbers()
    jwk = {"crv": "P-256", "kty": "EC", "x": _int_to_b64(numbers.x), "y": _int_to_b64(numbers.y)}
    thumbprint = hashlib.sha256(orjson.dumps(jwk, option=orjson.OPT_SORT_KEYS)).digest()
    return {**jwk, "kid": _b64url(thumbprint), "alg": ALGORITHM, "use": "sig"}


def generate_signing_key() -> ec.EllipticCurvePrivateKey:
    """A new P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def mint_assertion(
    signing_key: ec.EllipticCurvePrivateKey,
    *,
    issuer: str,
    audience: str,
    subject: str,
    email: str | None = None,
    groups: Iterable[str] = (),
    client_id: str | None = None,
    client_name: str | None = None,
    client_version: str | None = None,
    lifetime: int = MAX_LIFETIME_SECONDS,
    kid: str | None = None,
    now: float | None = None,
    secrets: Sequence[str] = (),
) -> str:
    """Sign an assertion (ES256): for one request, or with `secrets` for one request per secret,
    each carrying its own (`SECRET_HEADER`, `use_of`)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "jti": token_urlsafe(16),
        "groups": sorted(groups),
    }
    optional = {
        "email": email,
        "client_id": client_id,
        "client_name": client_name,
        "client_version": client_version,
    }
    claims.update({key: value for key, value in optional.items() if value is not None})
    if len(secrets) > MAX_SECRETS:
        raise ValueError(f"an assertion commits to at most {MAX_SECRETS} secrets")
    if secrets:
        claims["secrets_sha256"] = [secret_digest(secret) for secret in secrets]
    header = _header_segment(kid or public_jwk(signing_key)["kid"])
    signing_input = f"{header}.{_b64url(orjson.dumps(claims))}"
    der = signing_key.sign(signing_input.encode(), _ES256)
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")
    return f"{signing_input}.{_b64url(signature)}"


def new_secrets(count: int) -> list[str]:
    """``count`` secrets for one assertion, ``SECRET_BYTES`` random bytes each in base64url (as
    ``secrets.token_urlsafe`` writes them), from one read of the operating system's CSPRNG."""
    raw = os.urandom(SECRET_BYTES * count)
    return [
        _b64url(raw[start : start + SECRET_BYTES]) for start in range(0, len(raw), SECRET_BYTES)
    ]


def _secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()[:_DIGEST_BYTES]


def secret_digest(secret: str) -> str:
    """What an assertion's `secrets_sha256` claim holds for a secret."""
    return _b64url(_secret_hash(secret))


def use_of(index: int, secret: str) -> str:
    """The `SECRET_HEADER` value of the request that makes use `index` of an assertion."""
    return f"{index}.{secret}"


@functools.lru_cache(maxsize=64)
def _header_segment(kid: str) -> str:
    """The encoded JOSE header for a key: the same for every assertion it signs."""
    return _b64url(orjson.dumps({"alg": ALGORITHM, "typ": "JWT", "kid": kid}))


def _load_jwk(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError(f"JWK {jwk.get('kid')!r} is not an EC P-256 key")
    if jwk.get("alg", ALGORITHM) != ALGORITHM:
        raise ValueError(f"JWK {jwk.get('kid')!r} is for {jwk.get('alg')}, not {ALGORITHM}")
    if "d" in jwk:
        raise ValueError(f"JWK {jwk.get('kid')!r} holds a private key: configure public keys only")
    x = int.from_bytes(_b64url_decode(str(jwk["x"])), "big")
    y = int.from_bytes(_b64url_decode(str(jwk["y"])), "big")
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


class UsedIds:
    """Every use of an assertion accepted, each kept until its assertion has expired: what makes
    an assertion single use. A plain assertion's use is its `jti`; the uses of one with secrets
    are the bits of one integer under its `jti`, bit ``i`` for secret ``i``. One per process,
    shared by the verifiers that configuration reloads build, so a reload never forgets a use
    already made."""

    def __init__(self) -> None:
        self._until: dict[str, int] = {}
        self._masks: dict[str, int] = {}
        self._order: deque[tuple[int, str, dict[str, int]]] = deque()

    def _forget_expired(self, now: int) -> None:
        order = self._order
        while order and order[0][0] < now:
            _, jti, table = order.popleft()
            table.pop(jti, None)

    def use(self, jti: str, until: int, now: int) -> None:
        """Record `jti` as used until `until`; `InvalidAssertionError` when it already was."""
        self._forget_expired(now)
        if jti in self._until:
            raise InvalidAssertionError("assertion replayed: each jti is accepted once")
        self._until[jti] = until
        self._order.append((until, jti, self._until))

    def use_secret(self, jti: str, index: int, until: int, now: int) -> None:
        """Record the use of secret `index` of assertion `jti`, kept until `until`;
        `InvalidAssertionError` when it was already used."""
        self._forget_expired(now)
        masks = self._masks
        bit = 1 << index
        used = masks.get(jti)
        if used is None:
            masks[jti] = bit
            self._order.append((until, jti, masks))
        elif used & bit:
            raise InvalidAssertionError("assertion replayed: each secret is accepted once")
        else:
            masks[jti] = used | bit

    def __len__(self) -> int:
        """How many assertions have uses remembered."""
        return len(self._until) + len(self._masks)


class AssertionVerifier:
    """Verifies assertions for one audience against a set of public keys (parsed once)."""

    def __init__(
        self,
        jwks: Iterable[Mapping[str, Any]],
        *,
        issuer: str,
        audience: str,
        max_lifetime: int = MAX_LIFETIME_SECONDS,
        leeway: int = 5,
        clock: Callable[[], float] = time.time,
        used: UsedIds | None = None,
    ) -> None:
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for jwk in jwks:
            key = _load_jwk(jwk)
            self._keys[str(jwk.get("kid") or public_jwk(key)["kid"])] = key
        if not self._keys:
            raise ValueError("no verification keys configured: give at least one public JWK")
        self._issuer = issuer
        self._audience = audience
        self._max_lifetime = max_lifetime
        self._leeway = leeway
        self._clock = clock
        self._header_keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._used = UsedIds() if used is None else used
        self._verified: dict[str, tuple[str, _Verified]] = {}
        """Tokens remembered as verified, by their signature segment (hashing that is cheaper
        than hashing a 2 kB token on every request); a hit needs the whole token to match."""
        self.signatures_checked = 0
        """How many tokens had their signature checked (the others were remembered)."""

    def verify(self, token: str | None, secret: str | None = None) -> Identity:
        """The identity in a valid assertion; `InvalidAssertionError` saying why otherwise.
        `secret` is what the request carries in `SECRET_HEADER`."""
        if not token:
            raise InvalidAssertionError("missing identity assertion")
        signature = token[token.rfind(".") + 1 :]
        kept = self._verified.get(signature)
        if kept is not None and kept[0] == token:
            verified = kept[1]
        else:
            parts, key = self._parts(token)
            self.signatures_checked += 1
            self._check_signature(key, parts)
            verified = self._check_claims(self._json(parts[1], "claims"))
            if verified.committed is not None:
                self._remember(signature, token, verified)
        self._use(verified, secret)
        return verified.identity

    def _use(self, verified: _Verified, secret: str | None) -> None:
        """The checks that depend on the time and on the request: every time a token comes."""
        now = int(self._clock())
        leeway = self._leeway
        if verified.expires_at <= now - leeway:
            raise InvalidAssertionError("assertion expired")
        if verified.not_before > now + leeway:
            raise InvalidAssertionError("assertion not valid yet")
        jti = verified.identity.jti
        if verified.committed is None:
            self._used.use(jti, verified.expires_at + leeway, now)
        else:
            index = _secret_index(verified.committed, secret)
            self._used.use_secret(jti, index, verified.expires_at + leeway, now)

    def _remember(self, signature: str, token: str, verified: _Verified) -> None:
        """Keep what a token's signature and claims vouch for, for its next requests, so that
        they are checked once; at most ``MAX_VERIFIED`` tokens (the oldest goes first)."""
        remembered = self._verified
        if signature not in remembered and len(remembered) >= MAX_VERIFIED:
            del remembered[next(iter(remembered))]
        remembered[signature] = (token, verified)

    @property
    def remembered(self) -> int:
        """How many assertions with secrets are remembered as verified."""
        return len(self._verified)

    def _parts(self, token: str) -> tuple[list[str], ec.EllipticCurvePublicKey]:
        """A token's three segments and the key its header names."""
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidAssertionError("malformed assertion: expected three segments")
        return parts, self._header_keys.get(parts[0]) or self._key_for(parts[0])

    def _key_for(self, segment: str) -> ec.EllipticCurvePublicKey:
        """The key a header names, once its algorithm is checked; remembered per header text
        (bounded), since one gateway key signs every assertion with the same header."""
        header = self._json(segment, "header")
        if header.get("alg") != ALGORITHM:
            raise InvalidAssertionError(
                f"assertion algorithm {header.get('alg')!r} refused: only ES256 is accepted"
            )
        key = self._keys.get(str(header.get("kid")))
        if key is None:
            raise InvalidAssertionError(f"assertion signed with unknown key {header.get('kid')!r}")
        if len(self._header_keys) < MAX_REMEMBERED_HEADERS:
            self._header_keys[segment] = key
        return key

    @staticmethod
    def _json(segment: str, what: str) -> dict[str, Any]:
        try:
            value = orjson.loads(_b64url_decode(segment))
        except orjson.JSONDecodeError as exc:
            raise InvalidAssertionError(f"malformed assertion {what}: not JSON") from exc
        if not isinstance(value, dict):
            raise InvalidAssertionError(f"malformed assertion {what}: not an object")
        return value

    @staticmethod
    def _check_signature(key: ec.EllipticCurvePublicKey, parts: list[str]) -> None:
        signature = _b64url_decode(parts[2])
        if len(signature) != 2 * _COORDINATE_BYTES:
            raise InvalidAssertionError("bad assertion signature length")
        r = int.from_bytes(signature[:_COORDINATE_BYTES], "big")
        s = int.from_bytes(signature[_COORDINATE_BYTES:], "big")
        try:
            key.verify(
                encode_dss_signature(r, s),
                f"{parts[0]}.{parts[1]}".encode(),
                _ES256,
            )
        except InvalidSignature:
            raise InvalidAssertionError("assertion signature does not verify") from None

    def _check_claims(self, claims: dict[str, Any]) -> _Verified:
        """The checks that hold for a token whatever the time or the request."""
        issuer = claims.get("iss")
        if issuer != self._issuer:
            raise InvalidAssertionError(f"assertion issuer {issuer!r} is not trusted")
        audience = claims.get("aud")
        if audience != self._audience and audience != [self._audience]:
            raise InvalidAssertionError(
                f"assertion audience {audience!r} is not this server ({self._audience})"
            )
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if not (isinstance(exp, int) and isinstance(nbf, int) and isinstance(iat, int)):
            raise InvalidAssertionError("assertion needs integer exp, nbf and iat claims")
        if exp - min(iat, nbf) > self._max_lifetime:
            raise InvalidAssertionError(
                f"assertion lifetime exceeds {self._max_lifetime}s: the gateway must mint "
                "short-lived assertions"
            )
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidAssertionError("assertion has no subject")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise InvalidAssertionError("assertion has no jti")
        if "secret_sha256" in claims:
            raise InvalidAssertionError(
                "assertion commits to a secret in a form this shim does not take (secret_sha256): "
                "gateway and shim versions differ"
            )
        committed = _digests(claims.get("secrets_sha256"))
        groups = claims.get("groups") or []
        if not isinstance(groups, list) or not all(type(g) is str for g in groups):
            raise InvalidAssertionError("assertion groups must be a list of strings")
        email, client_id = claims.get("email"), claims.get("client_id")
        name, version = claims.get("client_name"), claims.get("client_version")
        identity = Identity(
            subject=subject,
            email=email if isinstance(email, str) else None,
            groups=tuple(groups),
            client_id=client_id if isinstance(client_id, str) else None,
            client_name=name if isinstance(name, str) else None,
            client_version=version if isinstance(version, str) else None,
            jti=jti,
            expires_at=exp,
            claims=claims,
        )
        return _Verified(identity, exp, max(nbf, iat), committed)


@dataclass(frozen=True, slots=True)
class _Verified:
    """What a token's signature and claims vouch for: its identity, time limits and secrets."""

    identity: Identity
    expires_at: int
    not_before: int
    committed: tuple[bytes, ...] | None
    """The secrets' digests (``_DIGEST_BYTES`` of each SHA-256), decoded."""


def _digests(claim: Any) -> tuple[bytes, ...] | None:
    """The `secrets_sha256` claim's digests as bytes; each must be the base64url of the first
    ``_DIGEST_BYTES`` bytes of a SHA-256."""
    if claim is None:
        return None
    if not (
        isinstance(claim, list)
        and 0 < len(claim) <= MAX_SECRETS
        and all(type(digest) is str for digest in claim)
    ):
        raise InvalidAssertionError("assertion secrets_sha256 must be a list of digests")
    try:
        digests = tuple(_b64url_decode(digest) for digest in claim)
    except InvalidAssertionError:
        raise InvalidAssertionError(
            "assertion secrets_sha256 holds a digest that is not base64url"
        ) from None
    for digest in digests:
        if len(digest) != _DIGEST_BYTES:
            raise InvalidAssertionError(
                f"assertion secrets_sha256 holds a digest of {len(digest)} bytes, not the "
                f"{_DIGEST_BYTES} this shim takes: gateway and shim versions may differ"
            )
    return digests


def _secret_index(committed: tuple[bytes, ...], use: str | None) -> int:
    """The index of the secret a request presents (`SECRET_HEADER`), once it matches the digest
    the assertion holds there; `InvalidAssertionError` otherwise."""
    if use is None:
        raise InvalidAssertionError("assertion presented without a secret it commits to")
    index_text, dot, secret = use.partition(".")
    well_formed = dot and secret and len(index_text) <= 2 and index_text.isascii()
    if not (well_formed and index_text.isdigit()):
        raise InvalidAssertionError("malformed assertion secret: expected <index>.<secret>")
    index = int(index_text)
    if index >= len(committed):
        raise InvalidAssertionError("assertion secret index out of range")
    if not hmac.compare_digest(_secret_hash(secret), committed[index]):
        raise InvalidAssertionError("assertion presented without a secret it commits to")
    return index
