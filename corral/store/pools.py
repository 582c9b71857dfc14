"""The one way to open a Postgres pool: explicit timeouts and limits, never library defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg


@dataclass(frozen=True)
class PoolSettings:
    """How a process connects to Postgres. ``dsn`` is secret-bearing and kept out of the repr."""

    dsn: str = field(repr=False)
    min_size: int = 1
    max_size: int = 10
    connect_timeout: float = 5.0
    command_timeout: float = 30.0
    statement_timeout_ms: int = 30_000
    idle_in_transaction_timeout_ms: int = 60_000
    max_inactive_connection_lifetime: float = 300.0
    application_name: str = "corral"


def server_settings(settings: PoolSettings) -> dict[str, str]:
    """Session parameters every pooled connection gets; time is always UTC."""
    return {
        "application_name": settings.application_name,
        "statement_timeout": str(settings.statement_timeout_ms),
        "idle_in_transaction_session_timeout": str(settings.idle_in_transaction_timeout_ms),
        "TimeZone": "UTC",
    }


async def create_pool(settings: PoolSettings) -> asyncpg.Pool:
    """Open an ``asyncpg.Pool``; the caller closes it (``await pool.close()``)."""
    return await asyncpg.create_pool(
        settings.dsn,
        min_size=settings.min_size,
        max_size=settings.max_size,
        timeout=settings.connect_timeout,
        command_timeout=settings.command_timeout,
        max_inactive_connection_lifetime=settings.max_inactive_connection_lifetime,
        server_settings=server_settings(settings),
    )


async def connect(settings: PoolSettings) -> asyncpg.Connection:
    """Open a single connection with the same timeouts as the pool (for LISTEN and the CLI)."""
    return await asyncpg.connect(
        settings.dsn,
        timeout=settings.connect_timeout,
        command_timeout=settings.command_timeout,
        server_settings=server_settings(settings),
    )
