"""API key repository: shown once, stored hashed, found by prefix, revocable."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from corral.store import api_keys
from corral.store.errors import InvalidInputError


async def test_a_created_key_is_stored_only_as_a_hash(store_pool: asyncpg.Pool) -> None:
    async with store_pool.acquire() as connection:
        new, record = await api_keys.create_key(
            connection, user_subject="ada", user_email="ada@example.com", groups=["eng"]
        )
        stored = await connection.fetchrow("SELECT * FROM api_keys")
    secret = new.token.rsplit("_", 1)[1]
    assert new.token.startswith(f"crl_{new.prefix}_")
    assert stored["secret_hash"] == hashlib.sha256(secret.encode()).digest()
    assert secret not in str(dict(stored))
    assert new.token not in repr(new)
    assert (record.user_subject, record.user_email, record.groups) == (
        "ada",
        "ada@example.com",
        ("eng",),
    )


async def test_find_key_needs_the_right_secret(store_pool: asyncpg.Pool) -> None:
    async with store_pool.acquire() as connection:
        new, _ = await api_keys.create_key(connection, user_subject="ada")
        other, _ = await api_keys.create_key(connection, user_subject="bob")
        forged = f"crl_{new.prefix}_{other.token.rsplit('_', 1)[1]}"
        presented = api_keys.parse_key(forged)
        assert presented is not None
        assert await api_keys.find_key(connection, presented) is None
        genuine = api_keys.parse_key(new.token)
        assert genuine is not None
        found = await api_keys.find_key(connection, genuine)
    assert found is not None
    assert found.user_subject == "ada"


@pytest.mark.parametrize(
    "token", ["", "crl_", "Bearer crl_x", "crl_0123456789ab_short", "ghp_0123456789ab_" + "a" * 52]
)
def test_malformed_keys_are_not_parsed(token: str) -> None:
    assert api_keys.parse_key(token) is None


async def test_revoke_marks_the_key_and_reports_unknown_prefixes(store_pool: asyncpg.Pool) -> None:
    async with store_pool.acquire() as connection:
        new, _ = await api_keys.create_key(connection, user_subject="ada")
        assert await api_keys.revoke_key(connection, new.prefix) is True
        assert await api_keys.revoke_key(connection, new.prefix) is False
        assert await api_keys.revoke_key(connection, "000000000000") is False
        (listed,) = await api_keys.list_keys(connection, user_subject="ada")
    assert listed.revoked_at is not None
    assert not listed.usable_at(datetime.now(UTC))


async def test_list_keys_filters_by_user(store_pool: asyncpg.Pool) -> None:
    async with store_pool.acquire() as connection:
        for user in ("ada", "ada", "bob"):
            await api_keys.create_key(connection, user_subject=user, name=f"{user}-key")
        assert len(await api_keys.list_keys(connection)) == 3
        assert {k.name for k in await api_keys.list_keys(connection, user_subject="ada")} == {
            "ada-key"
        }


def test_usable_at_respects_expiry_and_disabled_users() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    key = api_keys.ApiKey(
        prefix="0123456789ab",
        name="",
        user_subject="ada",
        user_email=None,
        groups=(),
        servers=None,
        created_at=now,
        expires_at=now + timedelta(hours=1),
        revoked_at=None,
        user_disabled=False,
    )
    assert key.usable_at(now)
    assert not key.usable_at(now + timedelta(hours=1))
    assert not api_keys.ApiKey(**{**key.__dict__, "user_disabled": True}).usable_at(now)


async def test_bad_server_limits_and_naive_expiry_are_refused(store_pool: asyncpg.Pool) -> None:
    async with store_pool.acquire() as connection:
        with pytest.raises(InvalidInputError, match="namespace/name"):
            await api_keys.create_key(connection, user_subject="ada", servers=["Not A Server"])
        with pytest.raises(InvalidInputError, match="time zone"):
            await api_keys.create_key(
                connection, user_subject="ada", expires_at=datetime(2030, 1, 1)
            )
        assert await api_keys.list_keys(connection) == []
