"""Request ids, and random ids for requests and audit events without a system call for each.

Rule: an id is 16 bytes from the operating system's CSPRNG, in hex, as ``secrets.token_hex(16)``
gives; ``RandomIds`` reads them ``batch`` at a time, since a ``getrandom`` call per id is a
measurable part of a proxied call. Ids are unique and unguessable, never secret: they appear in
headers, logs and the audit log. A request id the caller sends in ``X-Request-Id`` is kept when
it is 1-128 characters of ``[A-Za-z0-9._:-]`` (``request_id``): the one rule of the gateway, which
returns it and logs it, and of the shim, which records it in the audit event.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

ID_BYTES = 16
MAX_REQUEST_ID = 128
_REQUEST_ID = re.compile(f"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID}}}")


def request_id(presented: str | None, new_id: Callable[[], str]) -> str:
    """The caller's request id when well formed, otherwise ``new_id()``."""
    if presented and _REQUEST_ID.fullmatch(presented) is not None:
        return presented
    return new_id()


class RandomIds:
    """A source of hex ids, refilled from ``os.urandom`` every ``batch`` ids."""

    def __init__(self, batch: int = 256) -> None:
        if batch < 1:
            raise ValueError("a batch holds at least one id")
        self._batch = batch
        self._hex = ""
        self._offset = 0

    def next(self) -> str:
        offset = self._offset
        if offset >= len(self._hex):
            self._hex = os.urandom(ID_BYTES * self._batch).hex()
            offset = 0
        self._offset = offset + 2 * ID_BYTES
        return self._hex[offset : offset + 2 * ID_BYTES]
