"""Migrations: applied once under concurrency, idempotent, edits and failures detected."""

from __future__ import annotations

import asyncio

import pytest

from corral.store.errors import MigrationError
from corral.store.migrations import (
    Migration,
    apply_migrations,
    packaged_migrations,
    parse_migrations,
)
from corral.store.pools import PoolSettings, connect


async def test_two_concurrent_migrators_apply_once_and_neither_fails(postgres_dsn: str) -> None:
    settings = PoolSettings(postgres_dsn)
    first, second = await connect(settings), await connect(settings)
    try:
        reports = await asyncio.gather(apply_migrations(first), apply_migrations(second))
        versions = tuple(m.version for m in packaged_migrations())
        assert sorted(r.applied for r in reports) == [(), versions]
        rows = await first.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert tuple(row["version"] for row in rows) == versions
    finally:
        await first.close()
        await second.close()


async def test_applying_again_changes_nothing(postgres_dsn: str) -> None:
    connection = await connect(PoolSettings(postgres_dsn))
    try:
        await apply_migrations(connection)
        again = await apply_migrations(connection)
        assert again.applied == ()
        assert again.already_applied == tuple(m.version for m in packaged_migrations())
    finally:
        await connection.close()


async def test_an_edited_applied_migration_is_a_clear_error(postgres_dsn: str) -> None:
    original = [Migration(1, "things", "CREATE TABLE things (id int)")]
    edited = [Migration(1, "things", "CREATE TABLE things (id bigint)")]
    connection = await connect(PoolSettings(postgres_dsn))
    try:
        await apply_migrations(connection, original)
        with pytest.raises(MigrationError, match=r"0001_things\.sql was edited"):
            await apply_migrations(connection, edited)
    finally:
        await connection.close()


async def test_a_failing_migration_is_rolled_back_and_not_recorded(postgres_dsn: str) -> None:
    broken = [
        Migration(1, "good", "CREATE TABLE good (id int)"),
        Migration(2, "bad", "CREATE TABLE half (id int); SELECT no_such_function()"),
    ]
    connection = await connect(PoolSettings(postgres_dsn))
    try:
        with pytest.raises(MigrationError, match=r"0002_bad\.sql failed"):
            await apply_migrations(connection, broken)
        recorded = await connection.fetch("SELECT version FROM schema_migrations")
        assert [row["version"] for row in recorded] == [1]
        assert await connection.fetchval("SELECT to_regclass('half')") is None
    finally:
        await connection.close()


def test_files_must_be_numbered_without_gaps() -> None:
    with pytest.raises(MigrationError, match="out of sequence"):
        parse_migrations({"0001_a.sql": "", "0003_c.sql": ""})
    with pytest.raises(MigrationError, match="NNNN_lower_snake"):
        parse_migrations({"1_a.sql": ""})


def test_packaged_migrations_are_found() -> None:
    names = [m.file_name for m in packaged_migrations()]
    assert names[:2] == ["0001_users_and_api_keys.sql", "0002_audit_events.sql"]
