"""The gateway's identity-assertion keys: one signs, all are published for the shims.

Rule: keys are parsed once at start; a request only signs (``mint``). The JWKS lists every key's
public half so shims keep verifying assertions signed by the previous key during a rotation:
publish the new key second, let shims pick it up, then move it first.

Every request gets its own assertion (its own ``jti``, used once). Signing one takes about a
tenth of the gateway's work per call, so it is done ahead where it can be: while a request waits
for its shim's answer, ``prepare`` signs a spare for each caller and audience seen since, and the
caller's next request takes it (``mint``) instead of signing on its critical path. A spare is
handed out once, only to a request of the same caller (user, email, groups, client) for the same
server, and only while it is at most ``SPARE_MAX_AGE`` seconds old; otherwise ``mint`` signs one
there and then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from corral.common.assertion import MAX_LIFETIME_SECONDS, mint_assertion, public_jwk
from corral.gateway.authn import Principal

SPARE_MAX_AGE = 5.0
MAX_SPARES = 1024
PREPARED_PER_WAIT = 8

_SpareKey = tuple[str, str | None, tuple[str, ...], str, str]


def _spare_key(principal: Principal, audience: str) -> _SpareKey:
    """Everything an assertion says about its caller and target, so a spare fits exactly."""
    return (principal.user, principal.email, principal.groups, principal.client_id, audience)


def load_signing_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from PEM; ValueError says what is wrong with it."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("signing keys must be EC P-256 (secp256r1) private keys in PEM")
    return key


def signing_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM, for writing a key file."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class AssertionSigner:
    """Mints assertions with the first key; ``jwks`` publishes all public keys."""

    def __init__(
        self,
        keys: Sequence[ec.EllipticCurvePrivateKey],
        *,
        issuer: str,
        lifetime: int = MAX_LIFETIME_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not keys:
            raise ValueError("no signing keys configured: give at least one P-256 private key")
        if not 0 < lifetime <= MAX_LIFETIME_SECONDS:
            raise ValueError(f"assertion lifetime must be 1..{MAX_LIFETIME_SECONDS} seconds")
        self._key = keys[0]
        self._jwks = [public_jwk(key) for key in keys]
        self._kid = self._jwks[0]["kid"]
        self.issuer = issuer
        self._lifetime = lifetime
        self._clock = clock
        self._spares: dict[_SpareKey, tuple[float, str]] = {}
        self._wanted: dict[_SpareKey, tuple[Principal, str]] = {}
        self.spares_used = 0

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(jwk) for jwk in self._jwks]}

    def mint(self, principal: Principal, audience: str) -> str:
        """A new assertion for one request: this caller's spare when one is young enough,
        otherwise one signed now; either way a spare is wanted for the caller's next request."""
        key = _spare_key(principal, audience)
        spare = self._spares.pop(key, None)
        if key in self._wanted or len(self._wanted) < MAX_SPARES:
            self._wanted[key] = (principal, audience)
        if spare is not None and self._clock() - spare[0] <= SPARE_MAX_AGE:
            self.spares_used += 1
            return spare[1]
        return self._sign(principal, audience)

    def prepare(self) -> None:
        """Sign spares for the callers seen since the last call, a few at a time; meant for
        the time a request waits for its answer."""
        spares = self._spares
        for _ in range(min(PREPARED_PER_WAIT, len(self._wanted))):
            key, (principal, audience) = self._wanted.popitem()
            if key not in spares and len(spares) >= MAX_SPARES:
                del spares[next(iter(spares))]
            spares[key] = (self._clock(), self._sign(principal, audience))

    @property
    def spares(self) -> int:
        """How many spare assertions are held now."""
        return len(self._spares)

    def _sign(self, principal: Principal, audience: str) -> str:
        return mint_assertion(
            self._key,
            issuer=self.issuer,
            audience=audience,
            subject=principal.user,
            email=principal.email,
            groups=principal.groups,
            client_id=principal.client_id or None,
            lifetime=self._lifetime,
            kid=self._kid,
        )
