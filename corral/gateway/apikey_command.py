"""``corral apikey``: create, list and revoke API keys directly in the gateway's database.

Every subcommand applies pending migrations first, so it works on a fresh database. A created
key is printed once on stdout (alone on its line, for scripts) and is unrecoverable afterwards.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import asyncpg
import click

from corral.store import api_keys
from corral.store.errors import StoreError
from corral.store.migrations import apply_migrations
from corral.store.pools import PoolSettings, connect

T = TypeVar("T")

_DURATION = re.compile(r"^(?P<amount>\d+)(?P<unit>[mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta | None:
    """``30d``, ``12h``, ``90m``, ``2w``; ``never`` for no expiry."""
    if text == "never":
        return None
    match = _DURATION.match(text)
    if match is None or int(match["amount"]) == 0:
        raise click.BadParameter(f"{text!r} is not a duration like 30d, 12h, 90m, 2w or 'never'")
    return timedelta(**{_UNITS[match["unit"]]: int(match["amount"])})


def _prefix_of(text: str) -> str:
    parts = text.split("_")
    return parts[1] if len(parts) >= 2 and parts[0] == api_keys.KEY_SCHEME else text


def _run(dsn: str, action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def main() -> T:
        connection = await connect(PoolSettings(dsn, application_name="corral-apikey"))
        try:
            await apply_migrations(connection)
            return await action(connection)
        finally:
            await connection.close()

    try:
        return asyncio.run(main())
    except StoreError as error:
        raise click.ClickException(str(error)) from error
    except (OSError, asyncpg.PostgresError) as error:
        raise click.ClickException(f"database at --dsn not usable: {error}") from error


def _format_time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _status(key: api_keys.ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.user_disabled:
        return "user-disabled"
    return "active" if key.usable_at(now) else "expired"


dsn_option = click.option(
    "--dsn",
    envvar="CORRAL_DATABASE_URL",
    required=True,
    help="Postgres URI of the gateway database (or env CORRAL_DATABASE_URL).",
)


@click.group("apikey")
def apikey() -> None:
    """Manage API keys (stored hashed; a key is shown only when created)."""


@apikey.command("create")
@dsn_option
@click.option("--user", "user_subject", required=True, help="User the key acts as.")
@click.option("--email", default=None, help="The user's email, recorded if new.")
@click.option("--name", default="", help="A label for the key.")
@click.option("--group", "groups", multiple=True, help="A group the key carries (repeatable).")
@click.option(
    "--server", "servers", multiple=True, help="Limit to namespace/name (repeatable; default all)."
)
@click.option("--expires-in", default="90d", show_default=True, help="30d, 12h, 2w or never.")
def create_command(
    dsn: str,
    user_subject: str,
    email: str | None,
    name: str,
    groups: tuple[str, ...],
    servers: tuple[str, ...],
    expires_in: str,
) -> None:
    """Create a key and print it once."""
    lifetime = parse_duration(expires_in)
    expires_at = None if lifetime is None else datetime.now(UTC) + lifetime

    async def action(connection: asyncpg.Connection) -> tuple[api_keys.NewKey, api_keys.ApiKey]:
        return await api_keys.create_key(
            connection,
            user_subject=user_subject,
            user_email=email,
            name=name,
            groups=groups,
            servers=servers or None,
            expires_at=expires_at,
        )

    new, record = _run(dsn, action)
    click.echo(
        f"created key {record.prefix} for {record.user_subject}, expires "
        f"{_format_time(record.expires_at)}; store it now, it is not shown again:",
        err=True,
    )
    click.echo(new.token)


@apikey.command("list")
@dsn_option
@click.option("--user", "user_subject", default=None, help="Only this user's keys.")
def list_command(dsn: str, user_subject: str | None) -> None:
    """List keys (prefixes, never secrets)."""

    async def action(connection: asyncpg.Connection) -> list[api_keys.ApiKey]:
        return await api_keys.list_keys(connection, user_subject=user_subject)

    now = datetime.now(UTC)
    rows = [("PREFIX", "USER", "NAME", "GROUPS", "SERVERS", "CREATED", "EXPIRES", "STATUS")]
    for key in _run(dsn, action):
        rows.append(
            (
                key.prefix,
                key.user_subject,
                key.name or "-",
                ",".join(key.groups) or "-",
                "*" if key.servers is None else ",".join(key.servers),
                _format_time(key.created_at),
                _format_time(key.expires_at),
                _status(key, now),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@apikey.command("revoke")
@dsn_option
@click.argument("key")
def revoke_command(dsn: str, key: str) -> None:
    """Revoke KEY (its prefix, or the whole key). Listening gateways drop it at once."""
    prefix = _prefix_of(key)

    async def action(connection: asyncpg.Connection) -> bool:
        return await api_keys.revoke_key(connection, prefix)

    if not _run(dsn, action):
        raise click.ClickException(
            f"no active key with prefix {prefix!r}; see `corral apikey list`"
        )
    click.echo(f"revoked {prefix}")
