"""Identity assertions: the short-lived ES256 JWT the gateway mints and every shim verifies.

The gateway signs one assertion per forwarded HTTP request (`mint_assertion`); the shim accepts a
request only with a valid one (`AssertionVerifier.verify`). Only ES256 is accepted: `alg: none`,
HMAC and every other algorithm are refused before any key is touched. Checked: signature against
a key from the configured JWKS (several keys at once, for rotation, selected by `kid`), `iss`,
`aud` (exactly `corral:{namespace}/{server}`), `exp`, `nbf`, `iat`, a lifetime of at most
`max_lifetime` seconds, and a `jti` not seen before within its lifetime (single use).

Claims: `sub`, `email`, `groups`, `client_id` (the OAuth client or API key the caller used),
plus `client_name`/`client_version` when the gateway knows them.

The gateway may also send the caller's next assertion ahead of its request
(`NEXT_ASSERTION_HEADER`); the shim checks its signature while the current request waits for
the server (`check_ahead`), and `verify` then skips only that check for exactly that token.
Such an assertion commits to a secret (claim `secret_sha256`) that only its own request carries
(`SECRET_HEADER`), so one seen on its way ahead cannot be used by anyone else.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
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
NEXT_ASSERTION_HEADER = "Corral-Identity-Assertion-Next"
"""The header that may carry, ahead of time, the assertion of the caller's next request."""
SECRET_HEADER = "Corral-Identity-Assertion-Secret"
"""The header with the secret an assertion's `secret_sha256` claim commits to."""
MAX_CHECKED_AHEAD = 256
MAX_LIFETIME_SECONDS = 60
ALGORITHM = "ES256"
_COORDINATE_BYTES = 32
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


_FROM_URLSAFE = str.maketrans("-_", "+/")


def _b64url_decode(text: str) -> bytes:
    if "+" in text or "/" in text:
        raise InvalidAssertionError("malformed assertion: bad base64url segment")
    try:
        return binascii.a2b_base64(
            (text + "=" * (-len(text) % 4)).translate(_FROM_URLSAFE), strict_mode=True
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
    secret: str | None = None,
) -> str:
    """Sign an assertion (ES256) for one forwarded request; with `secret`, the assertion is
    accepted only from a request that also carries that secret (`SECRET_HEADER`)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "jti": secrets.token_urlsafe(16),
        "groups": sorted(groups),
    }
    optional = {
        "email": email,
        "client_id": client_id,
        "client_name": client_name,
        "client_version": client_version,
    }
    claims.update({key: value for key, value in optional.items() if value is not None})
    if secret is not None:
        claims["secret_sha256"] = secret_digest(secret)
    header = _header_segment(kid or public_jwk(signing_key)["kid"])
    signing_input = f"{header}.{_b64url(orjson.dumps(claims))}"
    der = signing_key.sign(signing_input.encode(), _ES256)
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")
    return f"{signing_input}.{_b64url(signature)}"


def secret_digest(secret: str) -> str:
    """What an assertion's `secret_sha256` claim holds for a secret."""
    return _b64url(hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest())


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
    """The `jti` of every assertion accepted, each kept until its assertion has expired: what
    makes an assertion single use. One per process, shared by the verifiers that configuration
    reloads build, so a reload never forgets an assertion already used."""

    def __init__(self) -> None:
        self._until: dict[str, int] = {}
        self._order: deque[tuple[int, str]] = deque()

    def use(self, jti: str, until: int, now: int) -> None:
        """Record `jti` as used until `until`; `InvalidAssertionError` when it already was."""
        order = self._order
        while order and order[0][0] < now:
            self._until.pop(order.popleft()[1], None)
        if jti in self._until:
            raise InvalidAssertionError("assertion replayed: each jti is accepted once")
        self._until[jti] = until
        order.append((until, jti))

    def __contains__(self, jti: str) -> bool:
        return jti in self._until


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
        self._ahead: dict[str, dict[str, Any]] = {}

    def verify(self, token: str | None, secret: str | None = None) -> Identity:
        """The identity in a valid assertion; `InvalidAssertionError` saying why otherwise.
        `secret` is what the request carries in `SECRET_HEADER`."""
        if not token:
            raise InvalidAssertionError("missing identity assertion")
        claims = self._ahead.pop(token, None)
        if claims is None:
            parts, key = self._parts(token)
            self._check_signature(key, parts)
            claims = self._json(parts[1], "claims")
        self._check_claims(claims, secret)
        return self._identity(claims)

    def check_ahead(self, token: str, subject: str) -> None:
        """Check the signature of `subject`'s next assertion before its request comes, so that
        a request presenting exactly this token skips that check; every claim, its time limits
        and its single use are still checked by `verify` when it is presented. Holds at most
        ``MAX_CHECKED_AHEAD`` (the oldest goes first); `InvalidAssertionError` when the token
        is malformed, names another subject or does not verify."""
        if token in self._ahead:
            return
        parts, key = self._parts(token)
        claims = self._json(parts[1], "claims")
        if claims.get("sub") != subject:
            raise InvalidAssertionError("next assertion names another subject")
        jti = claims.get("jti")
        if isinstance(jti, str) and jti in self._used:
            return
        self._check_signature(key, parts)
        if len(self._ahead) >= MAX_CHECKED_AHEAD:
            del self._ahead[next(iter(self._ahead))]
        self._ahead[token] = claims

    def _parts(self, token: str) -> tuple[list[str], ec.EllipticCurvePublicKey]:
        """A token's three segments and the key its header names."""
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidAssertionError("malformed assertion: expected three segments")
        return parts, self._header_keys.get(parts[0]) or self._key_for(parts[0])

    @property
    def checked_ahead(self) -> int:
        """How many assertions checked ahead wait for their request."""
        return len(self._ahead)

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

    def _check_claims(self, claims: Mapping[str, Any], secret: str | None) -> None:
        now = int(self._clock())
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
        leeway = self._leeway
        if exp <= now - leeway:
            raise InvalidAssertionError("assertion expired")
        if nbf > now + leeway or iat > now + leeway:
            raise InvalidAssertionError("assertion not valid yet")
        if exp - min(iat, nbf) > self._max_lifetime:
            raise InvalidAssertionError(
                f"assertion lifetime exceeds {self._max_lifetime}s: the gateway must mint "
                "short-lived assertions"
            )
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidAssertionError("assertion has no subject")
        committed = claims.get("secret_sha256")
        if committed is not None and (
            secret is None
            or not isinstance(committed, str)
            or not hmac.compare_digest(
                secret_digest(secret).encode(), committed.encode("utf-8", "surrogateescape")
            )
        ):
            raise InvalidAssertionError("assertion presented without the secret it commits to")
        self._check_jti(claims.get("jti"), int(exp), now)

    def _check_jti(self, jti: Any, exp: int, now: int) -> None:
        if not isinstance(jti, str) or not jti:
            raise InvalidAssertionError("assertion has no jti")
        self._used.use(jti, exp + self._leeway, now)

    @staticmethod
    def _identity(claims: dict[str, Any]) -> Identity:
        groups = claims.get("groups") or []
        if not isinstance(groups, list) or not all(type(g) is str for g in groups):
            raise InvalidAssertionError("assertion groups must be a list of strings")
        email, client_id = claims.get("email"), claims.get("client_id")
        name, version = claims.get("client_name"), claims.get("client_version")
        return Identity(
            subject=claims["sub"],
            email=email if isinstance(email, str) else None,
            groups=tuple(groups),
            client_id=client_id if isinstance(client_id, str) else None,
            client_name=name if isinstance(name, str) else None,
            client_version=version if isinstance(version, str) else None,
            jti=claims["jti"],
            expires_at=int(claims["exp"]),
            claims=claims,
        )
