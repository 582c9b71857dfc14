"""API keys: created once and shown once, stored as a SHA-256 hash, found by a visible prefix.

A key reads ``crl_<prefix>_<secret>``: ``prefix`` is 12 random hex characters that name the key in
listings, logs and revocations; ``secret`` is 256 random bits in lower-case base32. Only
SHA-256(secret) is stored. A fast hash is the right tool here: the secret is uniformly random and
far too large to guess, so a slow password hash (bcrypt, scrypt) would add no protection and
would put tens of milliseconds of CPU on every request that misses the authenticator's cache.

Revoking a key sets ``revoked_at`` and sends ``NOTIFY corral_api_key_revoked, '<prefix>'`` in the
same transaction, so replicas listening drop their cached copy at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from corral.store.errors import InvalidInputError

KEY_SCHEME = "crl"
REVOCATION_CHANNEL = "corral_api_key_revoked"

_KEY = re.compile(r"^crl_(?P<prefix>[0-9a-f]{12})_(?P<secret>[a-z2-7]{52})$")
_SERVER = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True)
class ParsedKey:
    """A presented key split into its lookup prefix and the hash of its secret."""

    prefix: str
    secret_hash: bytes


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: ``token`` goes to the user once and is never stored."""

    prefix: str
    token: str = field(repr=False)
    secret_hash: bytes = field(repr=False)


@dataclass(frozen=True)
class ApiKey:
    """A stored key with the user it acts for (never the secret)."""

    prefix: str
    name: str
    user_subject: str
    user_email: str | None
    groups: tuple[str, ...]
    servers: tuple[str, ...] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    user_disabled: bool

    def usable_at(self, now: datetime) -> bool:
        """True when the key is neither revoked, expired nor owned by a disabled user."""
        if self.revoked_at is not None or self.user_disabled:
            return False
        return self.expires_at is None or now < self.expires_at


def generate_key() -> NewKey:
    """Make a new random key."""
    prefix = secrets.token_hex(6)
    secret = base64.b32encode(secrets.token_bytes(32)).decode().rstrip("=").lower()
    return NewKey(
        token=f"{KEY_SCHEME}_{prefix}_{secret}",
        prefix=prefix,
        secret_hash=hashlib.sha256(secret.encode()).digest(),
    )


def parse_key(token: str) -> ParsedKey | None:
    """Split a presented key; None when it is not shaped like a Corral API key."""
    match = _KEY.match(token)
    if match is None:
        return None
    return ParsedKey(match["prefix"], hashlib.sha256(match["secret"].encode()).digest())


def validate_servers(servers: Sequence[str] | None) -> tuple[str, ...] | None:
    """Check ``namespace/name`` server limits; None means no limit."""
    if servers is None:
        return None
    for server in servers:
        if not _SERVER.match(server):
            raise InvalidInputError(
                f"server limit {server!r} is not 'namespace/name' (lower-case DNS labels)"
            )
    return tuple(servers)


_SELECT = """
SELECT k.prefix, k.secret_hash, k.name, k.groups, k.servers, k.created_at, k.expires_at,
       k.revoked_at, u.subject, u.email, u.disabled_at IS NOT NULL AS user_disabled
FROM api_keys k JOIN users u ON u.id = k.user_id
"""


def _row_to_key(row: asyncpg.Record) -> ApiKey:
    servers = row["servers"]
    return ApiKey(
        prefix=row["prefix"],
        name=row["name"],
        user_subject=row["subject"],
        user_email=row["email"],
        groups=tuple(row["groups"]),
        servers=None if servers is None else tuple(servers),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        user_disabled=row["user_disabled"],
    )


async def ensure_user(
    connection: asyncpg.Connection, subject: str, email: str | None = None
) -> None:
    """Create the user ``subject`` if absent; fill in the email when one is given."""
    if not subject.strip():
        raise InvalidInputError("user subject is empty; give the user's stable id or email")
    await connection.execute(
        """
        INSERT INTO users (subject, email) VALUES ($1, $2)
        ON CONFLICT (subject) DO UPDATE SET email = coalesce(EXCLUDED.email, users.email)
        """,
        subject,
        email,
    )


async def create_key(
    connection: asyncpg.Connection,
    *,
    user_subject: str,
    user_email: str | None = None,
    name: str = "",
    groups: Sequence[str] = (),
    servers: Sequence[str] | None = None,
    expires_at: datetime | None = None,
) -> tuple[NewKey, ApiKey]:
    """Store a new key for ``user_subject`` (created if absent); return it with its record."""
    limits = validate_servers(servers)
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidInputError("expires_at has no time zone; give an aware datetime (UTC)")
    new = generate_key()
    async with connection.transaction():
        await ensure_user(connection, user_subject, user_email)
        await connection.execute(
            """
            INSERT INTO api_keys (prefix, secret_hash, user_id, name, groups, servers, expires_at)
            SELECT $1, $2, id, $3, $4, $5, $6 FROM users WHERE subject = $7
            """,
            new.prefix,
            new.secret_hash,
            name,
            list(groups),
            None if limits is None else list(limits),
            expires_at,
            user_subject,
        )
        row = await connection.fetchrow(_SELECT + "WHERE k.prefix = $1", new.prefix)
    return new, _row_to_key(row)


async def find_key(connection: asyncpg.Connection, presented: ParsedKey) -> ApiKey | None:
    """The stored key matching a presented one (prefix and secret), usable or not."""
    row = await connection.fetchrow(_SELECT + "WHERE k.prefix = $1", presented.prefix)
    if row is None or not hmac.compare_digest(row["secret_hash"], presented.secret_hash):
        return None
    return _row_to_key(row)


async def list_keys(
    connection: asyncpg.Connection, *, user_subject: str | None = None
) -> list[ApiKey]:
    """Every key, or one user's keys, newest first."""
    if user_subject is None:
        rows = await connection.fetch(_SELECT + "ORDER BY k.created_at DESC, k.prefix")
    else:
        rows = await connection.fetch(
            _SELECT + "WHERE u.subject = $1 ORDER BY k.created_at DESC, k.prefix", user_subject
        )
    return [_row_to_key(row) for row in rows]


async def revoke_key(connection: asyncpg.Connection, prefix: str) -> bool:
    """Revoke the key with ``prefix`` and tell listening replicas; False when no such live key."""
    async with connection.transaction():
        status = await connection.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL",
            prefix,
        )
        if status == "UPDATE 0":
            return False
        await connection.execute("SELECT pg_notify($1, $2)", REVOCATION_CHANNEL, prefix)
    return True
