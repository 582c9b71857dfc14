"""Who is calling: a bearer token in, a ``Principal`` (or None) out.

Every authenticator keeps the request path free of database calls: the API-key authenticator
answers from an in-memory cache (one SHA-256 of the presented token and a dict lookup) and asks
Postgres only on a miss. A cached answer lives at most ``ttl`` seconds, which bounds how long a
revoked key keeps working on a replica; replicas that ``listen`` also drop a revoked key the
moment Postgres delivers the revocation notice.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Protocol

import asyncpg

from corral.api.policy import Caller
from corral.store import api_keys

Clock = Callable[[], float]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``allowed_servers`` None means no per-credential server limit."""

    user: str
    email: str | None = None
    groups: tuple[str, ...] = ()
    client_id: str = ""
    allowed_servers: frozenset[str] | None = None
    expires_at: datetime | None = None

    def may_reach(self, namespace: str, server: str) -> bool:
        """False when this credential is limited away from ``namespace/server``."""
        return self.allowed_servers is None or f"{namespace}/{server}" in self.allowed_servers

    def expired_at(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    @cached_property
    def caller(self) -> Caller:
        """The caller as access policies see it (built once per principal)."""
        return Caller(self.user, self.email, frozenset(self.groups))


class Authenticator(Protocol):
    """Turns a presented bearer token into a principal, or None when it proves nothing."""

    async def authenticate(self, token: str) -> Principal | None: ...


def principal_for_key(key: api_keys.ApiKey) -> Principal:
    """The principal an API key acts as; its client id names the key, never the secret."""
    return Principal(
        user=key.user_subject,
        email=key.user_email,
        groups=key.groups,
        client_id=f"apikey:{key.prefix}",
        allowed_servers=None if key.servers is None else frozenset(key.servers),
        expires_at=key.expires_at,
    )


@dataclass
class _Entry:
    prefix: str
    principal: Principal | None
    fresh_until: float


class ApiKeyAuthenticator:
    """Authenticates ``crl_...`` keys against the store, through a short-lived cache.

    Both hits and misses are cached (a miss for a shorter time) so a flood of bad keys reaches
    Postgres at most once per distinct key per ``negative_ttl``. Concurrent misses for the same
    key share one lookup. Expiry is checked on every hit. ``lookups`` counts database lookups.
    The cache is keyed by SHA-256 of the whole presented token (never the token itself), so a
    hit needs no parsing; only a miss parses the key.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        ttl: float = 5.0,
        negative_ttl: float = 1.0,
        max_entries: int = 10_000,
        clock: Clock = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_revoked: Callable[[str], None] | None = None,
    ) -> None:
        self._pool = pool
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._clock = clock
        self._wall_clock = wall_clock
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self.listening = asyncio.Event()
        """Set while revocation notices are being received."""
        self._on_revoked = on_revoked
        self._loading: dict[bytes, asyncio.Future[_Entry | None]] = {}
        self.lookups = 0

    async def authenticate(self, token: str) -> Principal | None:
        cache_key = hashlib.sha256(token.encode()).digest()
        entry = self._cache.get(cache_key)
        if entry is None or entry.fresh_until <= self._clock():
            presented = api_keys.parse_key(token)
            if presented is None:
                return None
            entry = await self._load_once(cache_key, presented)
        principal = entry.principal
        if principal is None:
            return None
        if principal.expires_at is not None and principal.expired_at(self._wall_clock()):
            return None
        return principal

    async def _load_once(self, cache_key: bytes, presented: api_keys.ParsedKey) -> _Entry:
        """Load, or wait for the load already under way; if that one fails, try on our own."""
        pending = self._loading.get(cache_key)
        if pending is not None:
            shared = await asyncio.shield(pending)
            return shared if shared is not None else await self._load(cache_key, presented)
        future: asyncio.Future[_Entry | None] = asyncio.get_running_loop().create_future()
        self._loading[cache_key] = future
        entry = None
        try:
            entry = await self._load(cache_key, presented)
            return entry
        finally:
            del self._loading[cache_key]
            future.set_result(entry)

    async def _load(self, cache_key: bytes, presented: api_keys.ParsedKey) -> _Entry:
        self.lookups += 1
        async with self._pool.acquire() as connection:
            key = await api_keys.find_key(connection, presented)
        usable = key is not None and key.usable_at(self._wall_clock())
        principal = principal_for_key(key) if key is not None and usable else None
        ttl = self._ttl if principal is not None else self._negative_ttl
        entry = _Entry(presented.prefix, principal, self._clock() + ttl)
        self._cache[cache_key] = entry
        self._cache.move_to_end(cache_key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return entry

    def forget_all(self) -> None:
        """Drop every cached answer (after revocation notices may have been missed)."""
        self._cache.clear()

    def forget(self, prefix: str) -> None:
        """Drop every cached answer for the key ``prefix`` (on a revocation notice)."""
        stale = [k for k, entry in self._cache.items() if entry.prefix == prefix]
        for cache_key in stale:
            del self._cache[cache_key]

    async def listen(self, connection: asyncpg.Connection) -> None:
        """Drop revoked keys as notices arrive on ``connection`` (a dedicated, unpooled one)."""
        await connection.add_listener(api_keys.REVOCATION_CHANNEL, self._on_notice)
        self.listening.set()

    def stop_listening(self) -> None:
        """The listening connection is gone (closing it ends the LISTEN)."""
        self.listening.clear()

    def _on_notice(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self.forget(payload)
        if self._on_revoked is not None:
            self._on_revoked(payload)


def static_entry(entry: Mapping[str, Any], index: int = 0) -> tuple[str, Principal]:
    """One static user: its token and principal; ValueError names the entry and the field."""
    token, user = entry.get("token"), entry.get("user")
    if not isinstance(token, str) or len(token) < 16:
        raise ValueError(f"users[{index}].token must be a string of at least 16 characters")
    if not isinstance(user, str) or not user:
        raise ValueError(f"users[{index}].user must be a non-empty string")
    groups, servers = entry.get("groups", []), entry.get("servers")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError(f"users[{index}].groups must be a list of strings")
    if servers is not None and (
        not isinstance(servers, list) or not all(isinstance(s, str) for s in servers)
    ):
        raise ValueError(f"users[{index}].servers must be a list of namespace/name strings")
    email = entry.get("email")
    return token, Principal(
        user=user,
        email=email if isinstance(email, str) else None,
        groups=tuple(groups),
        client_id="static",
        allowed_servers=None if servers is None else frozenset(servers),
    )


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class StaticAuthenticator:
    """A fixed token-to-principal directory for ``corral dev`` and tests; tokens kept hashed."""

    def __init__(self, directory: Mapping[str, Principal]) -> None:
        self._by_digest = {_token_digest(token): p for token, p in directory.items()}

    @classmethod
    def from_entries(cls, entries: Iterable[Mapping[str, Any]]) -> StaticAuthenticator:
        """Build from config entries ``{token, user, email?, groups?, servers?}``."""
        return cls(dict(static_entry(entry, index) for index, entry in enumerate(entries)))

    async def authenticate(self, token: str) -> Principal | None:
        return self._by_digest.get(_token_digest(token))


def first_match(authenticators: Sequence[Authenticator]) -> Authenticator:
    """The first principal any of ``authenticators`` finds (in order); a single one is used as
    it is, without a chain's call in front of every request."""
    if len(authenticators) == 1:
        return authenticators[0]
    return FirstMatchAuthenticator(authenticators)


class FirstMatchAuthenticator:
    """Tries authenticators in order; the first principal wins."""

    def __init__(self, authenticators: Iterable[Authenticator]) -> None:
        self._authenticators = tuple(authenticators)

    async def authenticate(self, token: str) -> Principal | None:
        for authenticator in self._authenticators:
            principal = await authenticator.authenticate(token)
            if principal is not None:
                return principal
        return None
