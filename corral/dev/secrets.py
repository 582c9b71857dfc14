"""The local platform's secrets, kept in the data directory (files of mode 0600).

Rule: created on first start, reused afterwards, so clients keep working across restarts:
``admin.key`` (the local admin's API key, also printed), ``signing-key.pem`` (identity
assertions), ``session.key`` (sealed session ids) and ``shim-token.key`` (shim audit tokens).
The admin key is checked against the database on each start and replaced when the database no
longer knows it (a fresh database in an old directory).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives.asymmetric import ec

from corral.common.assertion import generate_signing_key
from corral.gateway.sessions import KEY_BYTES
from corral.gateway.signing import load_signing_key, signing_key_pem
from corral.store import api_keys

ADMIN_USER = "admin"
ADMIN_EMAIL = "admin@localhost"
ADMIN_GROUPS = ("corral-admins", "corral-auditors")
ADMIN_KEY_FILE = "admin.key"


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's content, writing ``make()`` there first (mode 0600) when it is absent."""
    if path.exists():
        return path.read_bytes()
    value = make()
    write_private(path, value)
    return value


def write_private(path: Path, value: bytes) -> None:
    """Replace ``path`` with ``value``, readable by the owner only."""
    temporary = path.with_name(path.name + ".new")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(value)
    temporary.replace(path)


def signing_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    pem = read_or_create(
        data_dir / "signing-key.pem", lambda: signing_key_pem(generate_signing_key())
    )
    return load_signing_key(pem)


def session_key(data_dir: Path) -> bytes:
    return read_or_create(data_dir / "session.key", lambda: os.urandom(KEY_BYTES))


def shim_token_secret(data_dir: Path) -> bytes:
    return read_or_create(data_dir / "shim-token.key", lambda: os.urandom(32))


async def admin_key(connection: asyncpg.Connection, data_dir: Path) -> tuple[str, bool]:
    """The local admin's API key and whether it was created now."""
    path = data_dir / ADMIN_KEY_FILE
    if path.exists():
        token = path.read_text().strip()
        parsed = api_keys.parse_key(token)
        stored = await api_keys.find_key(connection, parsed) if parsed is not None else None
        if stored is not None and stored.usable_at(datetime.now(UTC)):
            return token, False
    new, _ = await api_keys.create_key(
        connection,
        user_subject=ADMIN_USER,
        user_email=ADMIN_EMAIL,
        name="corral dev admin",
        groups=ADMIN_GROUPS,
    )
    write_private(path, (new.token + "\n").encode())
    return new.token, True
