"""Authenticators: API keys through a cache that revocation reaches, and the static directory."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from corral.gateway.authn import (
    ApiKeyAuthenticator,
    FirstMatchAuthenticator,
    Principal,
    StaticAuthenticator,
    first_match,
)
from corral.store import api_keys
from corral.store.pools import PoolSettings, connect, create_pool


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _create(pool: asyncpg.Pool, **kwargs: Any) -> str:
    async with pool.acquire() as connection:
        new, _ = await api_keys.create_key(connection, user_subject="ada", **kwargs)
    return new.token


async def _revoke(pool: asyncpg.Pool, token: str) -> None:
    async with pool.acquire() as connection:
        assert await api_keys.revoke_key(connection, token.split("_")[1])


async def test_a_key_authenticates_as_its_user_groups_and_server_limit(
    store_pool: asyncpg.Pool,
) -> None:
    token = await _create(
        store_pool, user_email="ada@example.com", groups=["eng", "ops"], servers=["tools/time"]
    )
    principal = await ApiKeyAuthenticator(store_pool).authenticate(token)
    assert principal is not None
    assert (principal.user, principal.email, principal.groups) == (
        "ada",
        "ada@example.com",
        ("eng", "ops"),
    )
    assert principal.client_id == f"apikey:{token.split('_')[1]}"
    assert principal.may_reach("tools", "time")
    assert not principal.may_reach("tools", "git")


async def test_unknown_forged_and_malformed_tokens_get_nothing(store_pool: asyncpg.Pool) -> None:
    token = await _create(store_pool)
    authenticator = ApiKeyAuthenticator(store_pool)
    forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    assert await authenticator.authenticate(forged) is None
    assert await authenticator.authenticate("not-a-key") is None
    assert await authenticator.authenticate(token) is not None


async def test_a_cached_key_opens_nothing_for_a_token_with_its_prefix_and_another_secret(
    store_pool: asyncpg.Pool,
) -> None:
    token = await _create(store_pool)
    authenticator = ApiKeyAuthenticator(store_pool, ttl=3600)
    assert await authenticator.authenticate(token) is not None
    forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    assert await authenticator.authenticate(forged) is None
    assert await authenticator.authenticate(token + "x") is None
    assert await authenticator.authenticate(" " + token) is None
    assert await authenticator.authenticate(token) is not None


async def test_a_revocation_notice_refuses_the_key_on_its_next_request(
    store_pool: asyncpg.Pool,
) -> None:
    token, other = await _create(store_pool), await _create(store_pool)
    authenticator = ApiKeyAuthenticator(store_pool, ttl=3600)
    assert await authenticator.authenticate(token) is not None
    assert await authenticator.authenticate(other) is not None
    assert authenticator.lookups == 2
    await _revoke(store_pool, token)
    assert await authenticator.authenticate(token) is not None
    authenticator.forget(token.split("_")[1])
    assert await authenticator.authenticate(token) is None
    assert await authenticator.authenticate(other) is not None
    assert authenticator.lookups == 3


async def test_an_expired_key_is_refused_even_when_cached(store_pool: asyncpg.Pool) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    token = await _create(store_pool, expires_at=expires)
    wall = {"now": datetime.now(UTC)}
    authenticator = ApiKeyAuthenticator(store_pool, ttl=3600, wall_clock=lambda: wall["now"])
    assert await authenticator.authenticate(token) is not None
    wall["now"] = expires
    assert await authenticator.authenticate(token) is None
    past = await _create(store_pool, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert await authenticator.authenticate(past) is None


async def test_a_disabled_user_is_refused(store_pool: asyncpg.Pool) -> None:
    token = await _create(store_pool)
    async with store_pool.acquire() as connection:
        await connection.execute("UPDATE users SET disabled_at = now() WHERE subject = 'ada'")
    assert await ApiKeyAuthenticator(store_pool).authenticate(token) is None


async def test_cached_answers_need_no_database(postgres_dsn: str, store_pool: asyncpg.Pool) -> None:
    token = await _create(store_pool)
    own_pool = await create_pool(PoolSettings(postgres_dsn, min_size=1, max_size=1))
    authenticator = ApiKeyAuthenticator(own_pool, ttl=3600)
    assert await authenticator.authenticate(token) is not None
    await own_pool.close()
    assert await authenticator.authenticate(token) is not None


async def test_concurrent_misses_for_one_key_share_a_single_lookup(
    store_pool: asyncpg.Pool,
) -> None:
    token = await _create(store_pool)
    authenticator = ApiKeyAuthenticator(store_pool)
    principals = await asyncio.gather(*(authenticator.authenticate(token) for _ in range(50)))
    assert all(p is not None and p.user == "ada" for p in principals)
    assert authenticator.lookups == 1
    await authenticator.authenticate(token)
    assert authenticator.lookups == 1


async def test_another_replica_refuses_a_revoked_key_after_its_cache_ttl(
    store_pool: asyncpg.Pool,
) -> None:
    token = await _create(store_pool)
    clock = FakeClock()
    replica = ApiKeyAuthenticator(store_pool, ttl=5.0, clock=clock)
    assert await replica.authenticate(token) is not None
    await _revoke(store_pool, token)
    clock.now += 5.0
    assert await replica.authenticate(token) is None


async def test_a_listening_replica_drops_a_revoked_key_at_once(
    postgres_dsn: str, store_pool: asyncpg.Pool
) -> None:
    token = await _create(store_pool)
    revoked = asyncio.Event()
    replica = ApiKeyAuthenticator(store_pool, ttl=3600, on_revoked=lambda _prefix: revoked.set())
    listener = await connect(PoolSettings(postgres_dsn))
    try:
        await replica.listen(listener)
        assert await replica.authenticate(token) is not None
        await _revoke(store_pool, token)
        await asyncio.wait_for(revoked.wait(), timeout=10)
        assert await replica.authenticate(token) is None
    finally:
        replica.stop_listening()
        await listener.close()


async def test_static_directory_and_chain() -> None:
    ada = Principal(user="ada", groups=("eng",), client_id="dev")
    static = StaticAuthenticator({"dev-token-ada": ada})
    assert await static.authenticate("dev-token-ada") == ada
    assert await static.authenticate("dev-token-bob") is None
    chain = first_match([StaticAuthenticator({}), static])
    assert isinstance(chain, FirstMatchAuthenticator)
    assert await chain.authenticate("dev-token-ada") == ada
    assert await chain.authenticate("other") is None
    assert first_match([static]) is static


async def test_static_directory_from_config_entries() -> None:
    authenticator = StaticAuthenticator.from_entries(
        [{"token": "dev-token-0123456789", "user": "ada", "groups": ["eng"], "servers": ["a/b"]}]
    )
    principal = await authenticator.authenticate("dev-token-0123456789")
    assert principal is not None
    assert (principal.user, principal.groups) == ("ada", ("eng",))
    assert principal.may_reach("a", "b")
    assert not principal.may_reach("a", "c")


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ({"token": "short", "user": "ada"}, "token"),
        ({"token": "dev-token-0123456789"}, "user"),
        ({"token": "dev-token-0123456789", "user": "ada", "groups": "eng"}, "groups"),
        ({"token": "dev-token-0123456789", "user": "ada", "servers": [1]}, "servers"),
    ],
)
def test_static_entries_are_validated(entry: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=rf"users\[0\]\.{complaint}"):
        StaticAuthenticator.from_entries([entry])
