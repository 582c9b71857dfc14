"""The gateway's identity-assertion keys: one signs, all are published for the shims.

Rule: keys are parsed once at start; a request only signs (``mint``). The JWKS lists every key's
public half so shims keep verifying assertions signed by the previous key during a rotation:
publish the new key second, let shims pick it up, then move it first.

Every request makes its own, single use of an assertion. Signing one takes about a tenth of the
gateway's work per call, so one signature serves a run of requests: an assertion for one caller
(user, email, groups, client) and one server commits to ``SECRETS_PER_ASSERTION`` secrets, and
each of that caller's requests to that server takes the next one (``Minted.secret``, sent in its
own request only), while the assertion is at most ``max_age`` seconds old. The shim accepts each
secret once and checks the signature once per assertion. While a request waits for its shim's
answer, ``prepare`` signs the next assertion for each caller whose current one is running out or
getting old, so a run of requests rarely waits for a signature.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from corral.common.assertion import (
    MAX_LIFETIME_SECONDS,
    MAX_SECRETS,
    mint_assertion,
    new_secrets,
    public_jwk,
    use_of,
)
from corral.gateway.authn import Principal

SECRETS_PER_ASSERTION = MAX_SECRETS
MAX_AGE = 20.0
MAX_CALLERS = 1024
PREPARED_PER_WAIT = 4

_CallerKey = tuple[str, str | None, tuple[str, ...], str, str]


def _caller_key(principal: Principal, audience: str) -> _CallerKey:
    """Everything an assertion says about its caller and target, so an assertion fits exactly."""
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
    """What a request carries: an assertion and, in ``SECRET_HEADER``, the use it makes of it."""

    assertion: str
    secret: str


@dataclass(slots=True)
class _Signed:
    """One assertion with its secrets, and how many of them have been handed out."""

    signed_at: float
    token: str
    secrets: list[str]
    taken: int = 0

    def usable(self, oldest: float) -> bool:
        return self.taken < len(self.secrets) and self.signed_at >= oldest


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
        self.max_age = min(MAX_AGE, lifetime / 3)
        self._clock = clock
        self._current: dict[_CallerKey, _Signed] = {}
        self._next: dict[_CallerKey, _Signed] = {}
        self._wanted: dict[_CallerKey, tuple[Principal, str]] = {}
        self.signed = 0

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(jwk) for jwk in self._jwks]}

    def mint(self, principal: Principal, audience: str) -> Minted:
        """The assertion and the secret for one request of this caller to this server: the next
        secret of the caller's current assertion, or of one signed now when it has none left or
        is older than ``max_age``."""
        key = _caller_key(principal, audience)
        now = self._clock()
        oldest = now - self.max_age
        signed = self._current.get(key)
        if signed is None or not signed.usable(oldest):
            signed = self._next.pop(key, None)
            if signed is None or not signed.usable(oldest):
                signed = self._sign(principal, audience)
            self._hold(self._current, key, signed)
        index = signed.taken
        signed.taken += 1
        running_out = signed.taken * 4 >= len(signed.secrets) * 3
        getting_old = signed.signed_at < now - self.max_age / 2
        wanted = self._wanted
        if (running_out or getting_old) and key not in self._next and len(wanted) < MAX_CALLERS:
            wanted[key] = (principal, audience)
        return Minted(signed.token, use_of(index, signed.secrets[index]))

    def prepare(self) -> None:
        """Sign the next assertion of the callers whose current one is running out or getting
        old, ``PREPARED_PER_WAIT`` at most; meant for the time a request waits for its answer."""
        budget = PREPARED_PER_WAIT
        while budget and self._wanted:
            key, (principal, audience) = self._wanted.popitem()
            if key not in self._next:
                self._hold(self._next, key, self._sign(principal, audience))
                budget -= 1

    @property
    def held(self) -> int:
        """How many assertions are held for callers now (current and next)."""
        return len(self._current) + len(self._next)

    @staticmethod
    def _hold(held: dict[_CallerKey, _Signed], key: _CallerKey, signed: _Signed) -> None:
        """Keep an assertion for a caller, for ``MAX_CALLERS`` callers at most (the one that went
        longest without a new assertion goes first)."""
        held.pop(key, None)
        if len(held) >= MAX_CALLERS:
            del held[next(iter(held))]
        held[key] = signed

    def _sign(self, principal: Principal, audience: str) -> _Signed:
        secrets = new_secrets(SECRETS_PER_ASSERTION)
        token = mint_assertion(
            self._key,
            issuer=self.issuer,
            audience=audience,
            subject=principal.user,
            email=principal.email,
            groups=principal.groups,
            client_id=principal.client_id or None,
            lifetime=self._lifetime,
            kid=self._kid,
            secrets=secrets,
        )
        self.signed += 1
        return _Signed(self._clock(), token, secrets)
