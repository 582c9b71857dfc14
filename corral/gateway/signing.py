"""The gateway's identity-assertion keys: one signs, all are published for the shims.

Rule: keys are parsed once at start; a request only signs (``mint``). The JWKS lists every key's
public half so shims keep verifying assertions signed by the previous key during a rotation:
publish the new key second, let shims pick it up, then move it first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from corral.common.assertion import MAX_LIFETIME_SECONDS, mint_assertion, public_jwk
from corral.gateway.authn import Principal


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

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(jwk) for jwk in self._jwks]}

    def mint(self, principal: Principal, audience: str) -> str:
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
