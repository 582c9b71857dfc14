"""`corral apikey`: create prints the key once, list shows prefixes only, revoke takes effect."""

from __future__ import annotations

import asyncio

import click
import pytest
from click.testing import CliRunner

from corral.gateway.apikey_command import apikey, parse_duration
from corral.gateway.authn import ApiKeyAuthenticator
from corral.store.pools import PoolSettings, create_pool


async def _authenticates(dsn: str, token: str) -> bool:
    pool = await create_pool(PoolSettings(dsn, min_size=1, max_size=1))
    try:
        return await ApiKeyAuthenticator(pool).authenticate(token) is not None
    finally:
        await pool.close()


def test_create_list_revoke(postgres_dsn: str) -> None:
    runner = CliRunner()
    created = runner.invoke(
        apikey,
        [
            *("create", "--dsn", postgres_dsn, "--user", "ada", "--group", "eng"),
            *("--server", "tools/time", "--expires-in", "7d"),
        ],
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    prefix = token.split("_")[1]
    assert asyncio.run(_authenticates(postgres_dsn, token))

    listed = runner.invoke(apikey, ["list", "--dsn", postgres_dsn])
    assert listed.exit_code == 0, listed.output
    assert prefix in listed.stdout
    assert "tools/time" in listed.stdout
    assert token.rsplit("_", 1)[1] not in listed.stdout

    revoked = runner.invoke(apikey, ["revoke", "--dsn", postgres_dsn, token])
    assert revoked.exit_code == 0, revoked.output
    assert not asyncio.run(_authenticates(postgres_dsn, token))
    assert "revoked" in runner.invoke(apikey, ["list", "--dsn", postgres_dsn]).stdout

    again = runner.invoke(apikey, ["revoke", "--dsn", postgres_dsn, prefix])
    assert again.exit_code == 1
    assert "no active key" in again.output


def test_bad_input_is_refused_with_a_clear_message(postgres_dsn: str) -> None:
    result = CliRunner().invoke(
        apikey, ["create", "--dsn", postgres_dsn, "--user", "ada", "--server", "Bad Server"]
    )
    assert result.exit_code == 1
    assert "namespace/name" in result.output


def test_parse_duration() -> None:
    assert parse_duration("never") is None
    assert parse_duration("12h").total_seconds() == 12 * 3600  # type: ignore[union-attr]
    with pytest.raises(click.BadParameter, match="duration"):
        parse_duration("0d")
    with pytest.raises(click.BadParameter, match="duration"):
        parse_duration("soon")
