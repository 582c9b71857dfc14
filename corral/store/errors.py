"""The store's exception tree; see the package docstring for the shape."""

from __future__ import annotations

import asyncpg


class StoreError(Exception):
    """The store refused or could not complete an operation."""


class MigrationError(StoreError):
    """The migration files and the database's ``schema_migrations`` disagree."""


class StoreUnavailableError(StoreError):
    """Postgres could not be reached or dropped the connection; the operation may be retried."""


class InvalidInputError(StoreError):
    """A value given to the store is malformed; the message names the field and the fix."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
"""Errors after which the same operation can succeed on a retry (server restart, network drop)."""
