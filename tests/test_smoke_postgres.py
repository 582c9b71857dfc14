"""The embedded Postgres is a real server, and each test gets a database of its own."""

from __future__ import annotations

import asyncpg
import pytest

from tests.fixtures.postgres import PostgresServer

MARKER_TABLE = "smoke_marker"


async def test_server_answers_version_over_tcp_with_password(
    postgres_server: PostgresServer,
) -> None:
    connection = await asyncpg.connect(postgres_server.admin_dsn)
    try:
        version = await connection.fetchval("select version()")
    finally:
        await connection.close()
    assert version.startswith("PostgreSQL 18")


async def test_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    wrong = PostgresServer(
        host=postgres_server.host,
        port=postgres_server.port,
        user=postgres_server.user,
        password="not-the-password",
    )
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong.admin_dsn)


@pytest.mark.parametrize("round_", [1, 2])
async def test_each_test_gets_a_fresh_database(postgres_dsn: str, round_: int) -> None:
    connection = await asyncpg.connect(postgres_dsn)
    try:
        existing = await connection.fetchval("select to_regclass($1)::text", MARKER_TABLE)
        assert existing is None, f"round {round_} found a table left by another test"
        await connection.execute(f"create table {MARKER_TABLE} (round int)")
        await connection.execute(f"insert into {MARKER_TABLE} values ($1)", round_)
        assert await connection.fetchval(f"select round from {MARKER_TABLE}") == round_
    finally:
        await connection.close()


async def test_no_test_database_outlives_its_test(postgres_server: PostgresServer) -> None:
    connection = await asyncpg.connect(postgres_server.admin_dsn)
    try:
        left = await connection.fetch(
            "select datname from pg_database where datname like 'test\\_%'"
        )
    finally:
        await connection.close()
    assert [row["datname"] for row in left] == []
