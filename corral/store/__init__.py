"""Postgres access through asyncpg: plain SQL, numbered migrations, one repository module per table.

Rules for this package:

- Every statement is plain SQL in the module that owns the table; no ORM, no query builder.
- Schema changes are new numbered files in ``migrations/``; an applied file is never edited.
- Nothing here reads settings from the environment or holds a module-level connection: callers
  pass a pool (``pools.create_pool``) or a connection.

Errors raised by this package::

    StoreError                     anything the store refuses or cannot do
     +-- MigrationError          the migration files and the database disagree
     +-- StoreUnavailableError   Postgres unreachable or the connection dropped; retry
     +-- InvalidInputError       a value given to the store is malformed (the message names it)
"""

from corral.store.errors import InvalidInputError, MigrationError, StoreError, StoreUnavailableError

__all__ = ["InvalidInputError", "MigrationError", "StoreError", "StoreUnavailableError"]
