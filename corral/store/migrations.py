"""Numbered SQL migrations, applied in order under a Postgres advisory lock.

Files are ``migrations/NNNN_name.sql`` inside this package. Each runs in its own transaction with
its row in ``schema_migrations`` (version, name, SHA-256 checksum). Any number of processes may
call ``apply_migrations`` at once: the first takes the lock and applies, the others wait for it
and then find nothing left to do. An applied file whose checksum changed is an error, because
the database no longer matches what the code believes it ran.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from corral.store.errors import MigrationError

MIGRATION_LOCK_KEY = 0x636F7272616C_01
"""Advisory lock key held while migrating ("corral" in ASCII, then a version byte)."""

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def file_name(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


@dataclass(frozen=True)
class MigrationReport:
    """What ``apply_migrations`` did: versions it applied and versions already present."""

    applied: tuple[int, ...]
    already_applied: tuple[int, ...]


def parse_migrations(files: dict[str, str]) -> list[Migration]:
    """Turn ``{file name: SQL}`` into migrations ordered by version; refuse bad names and gaps."""
    migrations = []
    for file_name, sql in files.items():
        match = _FILE_NAME.match(file_name)
        if match is None:
            raise MigrationError(
                f"migration file {file_name!r} is not named NNNN_lower_snake.sql; rename it"
            )
        migrations.append(Migration(int(match["version"]), match["name"], sql))
    migrations.sort(key=lambda m: m.version)
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration {migration.file_name} is out of sequence: expected version "
                f"{expected:04d}; versions must run 0001, 0002, ... without gaps or repeats"
            )
    return migrations


def packaged_migrations() -> list[Migration]:
    """The migrations shipped in ``corral/store/migrations``."""
    directory = resources.files("corral.store").joinpath("migrations")
    files = {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in directory.iterdir()
        if entry.name.endswith(".sql")
    }
    return parse_migrations(files)


def check_applied(migrations: list[Migration], applied: dict[int, str]) -> list[Migration]:
    """Return the migrations still to apply; raise if an applied file was edited.

    ``applied`` maps version to the checksum recorded when it ran. Versions the database has
    but the files do not (a newer release ran here) are tolerated so an older replica can still
    start during a rolling upgrade.
    """
    pending = []
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is None:
            pending.append(migration)
        elif recorded != migration.checksum:
            raise MigrationError(
                f"migration {migration.file_name} was edited after it was applied "
                f"(database checksum {recorded[:12]}, file checksum {migration.checksum[:12]}); "
                "restore the original file and put the change in a new numbered migration"
            )
    return pending


async def apply_migrations(
    connection: asyncpg.Connection,
    migrations: list[Migration] | None = None,
    *,
    lock_timeout: float = 60.0,
) -> MigrationReport:
    """Apply every pending migration on ``connection`` while holding the migration lock."""
    chosen = packaged_migrations() if migrations is None else migrations
    try:
        await connection.execute(
            "SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY, timeout=lock_timeout
        )
    except TimeoutError as error:
        raise MigrationError(
            f"another process held the migration lock for more than {lock_timeout} s; "
            "check for a stuck migration (pg_locks, objid of the advisory lock) and retry"
        ) from error
    try:
        await connection.execute(_CREATE_TABLE)
        rows = await connection.fetch("SELECT version, checksum FROM schema_migrations")
        pending = check_applied(chosen, {row["version"]: row["checksum"] for row in rows})
        for migration in pending:
            await _apply_one(connection, migration)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    done = {m.version for m in pending}
    return MigrationReport(
        applied=tuple(sorted(done)),
        already_applied=tuple(sorted(m.version for m in chosen if m.version not in done)),
    )


async def _apply_one(connection: asyncpg.Connection, migration: Migration) -> None:
    async with connection.transaction():
        try:
            await connection.execute(migration.sql)
        except asyncpg.PostgresError as error:
            raise MigrationError(
                f"migration {migration.file_name} failed and was rolled back: {error}; "
                "fix the SQL (it has not been recorded as applied)"
            ) from error
        await connection.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            migration.version,
            migration.name,
            migration.checksum,
        )
