"""Gateway session ids: the upstream session, its instance and its user, sealed for the client.

Rule: no replica keeps session state. The id a client sees is ``v1.<key id>.<nonce+ciphertext>``
(base64url), AES-256-GCM over ``{upstream id, instance, subject, issued}`` with the route
(``namespace/server``) as associated data, so an id opened on another server does not verify.
Any replica holding the keys routes the id to the instance that owns it. Several keys at once
allow rotation: the first one seals, every one opens.

An id that does not open, is too old, or belongs to another user is "unknown" to the caller:
the gateway answers 404 as the MCP transport does for sessions it does not recognise, so an id
taken from someone else reveals nothing and is never authentication.

The same id comes back on every request of a session, so a codec remembers the last ids it
sealed or opened (bounded, least recently used first out), keyed by the presented text and
the route: a remembered id is not decrypted again, but its age is checked on every use, and
the caller still checks the user and the instance on every request. Ids that fail to open are
never remembered, so a flood of bad ids cannot push good ones out.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
MAX_REMEMBERED = 4096


@dataclass(init=False, slots=True)
class SessionRef:
    """What a gateway session id carries. Never changed once made."""

    upstream_id: str
    instance: str
    subject: str
    issued_at: int

    def __init__(self, upstream_id: str, instance: str, subject: str, issued_at: int) -> None:
        self.upstream_id = upstream_id
        self.instance = instance
        self.subject = subject
        self.issued_at = issued_at


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
        remembered: int = MAX_REMEMBERED,
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
        self._remembered_max = remembered
        self._opened: OrderedDict[tuple[str, str], SessionRef] = OrderedDict()

    def seal(self, ref: SessionRef, route: str) -> str:
        """The id to hand the client for ``ref`` on ``route`` (``namespace/server``)."""
        plain = orjson.dumps(
            {"u": ref.upstream_id, "i": ref.instance, "s": ref.subject, "t": ref.issued_at}
        )
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._sealing].encrypt(nonce, plain, route.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()
        session_id = f"{VERSION}.{self._sealing}.{body}"
        self._remember((session_id, route), ref)
        return session_id

    def new_ref(self, upstream_id: str, instance: str, subject: str) -> SessionRef:
        return SessionRef(upstream_id, instance, subject, int(self._clock()))

    def open(self, session_id: str, route: str) -> SessionRef | None:
        """The reference in ``session_id`` for ``route``, or None when it is not one of ours,
        was sealed for another route, or is older than ``max_age``."""
        key = (session_id, route)
        ref = self._opened.get(key)
        if ref is None:
            ref = self._decrypt(session_id, route)
            if ref is None:
                return None
            self._remember(key, ref)
        else:
            self._opened.move_to_end(key)
        if self._clock() - ref.issued_at > self._max_age:
            del self._opened[key]
            return None
        return ref

    def _remember(self, key: tuple[str, str], ref: SessionRef) -> None:
        self._opened[key] = ref
        if len(self._opened) > self._remembered_max:
            self._opened.popitem(last=False)

    def _decrypt(self, session_id: str, route: str) -> SessionRef | None:
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
        return ref
