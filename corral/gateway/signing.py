"""The gateway's identity-assertion keys: one signs, all are published for the shims.

Rule: keys are parsed once at start; a request only signs (``mint``). The JWKS lists every key's
public half so shims keep verifying assertions signed by the previous key during a rotation:
publish the new key second, let shims pick it up, then move it first.

Every request gets its own assertion (its own ``jti``, used once). Signing one takes about a
tenth of the gateway's work per call, so it is done ahead where it can be: while a request waits
for its shim's answer, ``prepare`` signs spares (two) for each caller and audience seen since,
and the caller's next request takes the oldest (``mint``) instead of signing on its critical
path. A spare is handed out once, only to a request of the same caller (user, email, groups,
client) for the same server, and only while it is at most ``SPARE_MAX_AGE`` seconds old;
otherwise ``mint`` signs one there and then. The request also carries the caller's following
spare, once (``Minted.ahead``), so that its shim can check that signature while it waits for
its server instead of when the next request comes. A spare commits to a secret of its own that
travels only with the request it is minted for (``Minted.secret``): a spare seen on its way
ahead is of no use to anyone else.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from corral.common.assertion import MAX_LIFETIME_SECONDS, mint_assertion, public_jwk
from corral.gateway.authn import Principal

SPARE_MAX_AGE = 5.0
MAX_SPARES = 1024
SPARES_PER_CALLER = 2
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


class Minted(NamedTuple):
    """A request's assertion with the secret it commits to (spares only), and the caller's
    next assertion when it is to be sent ahead."""

    assertion: str
    secret: str | None
    ahead: str | None


@dataclass(slots=True)
class _Spare:
    signed_at: float
    token: str
    secret: str
    announced: bool = False


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
        self._spares: dict[_SpareKey, deque[_Spare]] = {}
        self._wanted: dict[_SpareKey, tuple[Principal, str]] = {}
        self.spares_used = 0

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(jwk) for jwk in self._jwks]}

    def mint(self, principal: Principal, audience: str) -> Minted:
        """A new assertion for one request: this caller's oldest spare when it is young
        enough, otherwise one signed now; and the caller's next spare, once, to send ahead.
        Either way spares are wanted for the caller's next requests."""
        key = _spare_key(principal, audience)
        if key in self._wanted or len(self._wanted) < MAX_SPARES:
            self._wanted[key] = (principal, audience)
        queue = self._spares.get(key)
        if queue:
            oldest = self._clock() - SPARE_MAX_AGE
            while queue and queue[0].signed_at < oldest:
                queue.popleft()
        if not queue:
            return Minted(self._sign(principal, audience), None, None)
        self.spares_used += 1
        spare = queue.popleft()
        if not queue or queue[0].announced:
            return Minted(spare.token, spare.secret, None)
        queue[0].announced = True
        return Minted(spare.token, spare.secret, queue[0].token)

    def prepare(self) -> None:
        """Sign spares for the callers seen since the last call, up to ``SPARES_PER_CALLER``
        each and ``PREPARED_PER_WAIT`` in all; meant for the time a request waits for its
        answer. Spares are held for at most ``MAX_SPARES`` callers (the oldest goes first)."""
        budget = PREPARED_PER_WAIT
        spares = self._spares
        while budget and self._wanted:
            key, (principal, audience) = self._wanted.popitem()
            queue = spares.get(key)
            if queue is None:
                if len(spares) >= MAX_SPARES:
                    del spares[next(iter(spares))]
                queue = spares[key] = deque()
            while budget and len(queue) < SPARES_PER_CALLER:
                secret = secrets.token_urlsafe(16)
                token = self._sign(principal, audience, secret)
                queue.append(_Spare(self._clock(), token, secret))
                budget -= 1

    @property
    def spares(self) -> int:
        """How many spare assertions are held now."""
        return sum(len(queue) for queue in self._spares.values())

    def _sign(self, principal: Principal, audience: str, secret: str | None = None) -> str:
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
            secret=secret,
        )
