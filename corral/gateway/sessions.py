"""Gateway session ids: the upstream session, its instance and its user, sealed for the client.

Rule: no replica keeps session state. The id a client sees is ``v1.<key id>.<nonce+ciphertext>``
(base64url), AES-256-GCM over ``{upstream id, instance, subject, issued}`` with the route
(``namespace/server``) as associated data, so an id opened on another server does not verify.
Any replica holding the keys routes the id to the instance that owns it. Several keys at once
allow rotation: the first one seals, every one opens.

An id that does not open, is too old, or belongs to another user is "unknown" to the caller:
the gateway answers 404 as the MCP transport does for sessions it does not recognise, so an id
taken from someone else reveals nothing and is never authentication.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12


@dataclass(frozen=True)
class SessionRef:
    """What a gateway session id carries."""

    upstream_id: str
    instance: str
    subject: str
    issued_at: int


def key_id(key: bytes) -> str:
    """A short public name for a session key (a digest prefix, never the key)."""
    return base64.urlsafe_b64encode(hashlib.sha256(b"corral-session:" + key).digest()[:6]).decode()


class SessionCodec:
    """Seals and opens gateway session ids with a list of AES-256-GCM keys (the first seals)."""

    def __init__(
        self,
        keys: Sequence[bytes],
        *,
        max_age: float = 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ValueError("no session keys configured: give at least one 32-byte key")
        for index, key in enumerate(keys):
            if len(key) != KEY_BYTES:
                raise ValueError(
                    f"session key {index} has {len(key)} bytes; AES-256-GCM needs {KEY_BYTES}"
                )
        self._ciphers = {key_id(key): AESGCM(key) for key in keys}
        self._sealing = key_id(keys[0])
        self._max_age = max_age
        self._clock = clock

    def seal(self, ref: SessionRef, route: str) -> str:
        """The id to hand the client for ``ref`` on ``route`` (``namespace/server``)."""
        plain = orjson.dumps(
            {"u": ref.upstream_id, "i": ref.instance, "s": ref.subject, "t": ref.issued_at}
        )
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._sealing].encrypt(nonce, plain, route.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()
        return f"{VERSION}.{self._sealing}.{body}"

    def new_ref(self, upstream_id: str, instance: str, subject: str) -> SessionRef:
        return SessionRef(upstream_id, instance, subject, int(self._clock()))

    def open(self, session_id: str, route: str) -> SessionRef | None:
        """The reference in ``session_id`` for ``route``, or None when it is not one of ours,
        was sealed for another route, or is older than ``max_age``."""
        version, _, rest = session_id.partition(".")
        kid, _, body = rest.partition(".")
        cipher = self._ciphers.get(kid)
        if version != VERSION or cipher is None or len(body) > 4096:
            return None
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], route.encode())
            data = orjson.loads(plain)
            ref = SessionRef(str(data["u"]), str(data["i"]), str(data["s"]), int(data["t"]))
        except (ValueError, InvalidTag, KeyError, TypeError):
            return None
        if self._clock() - ref.issued_at > self._max_age:
            return None
        return ref
