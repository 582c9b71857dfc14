"""`corral dev [DIR]`: the whole platform on one machine, in one command (docs/dev.md)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from pathlib import Path

import click
import uvloop

from corral.common.log import setup_logging
from corral.dev.postgres import PostgresError
from corral.dev.runtime import DevOptions, DevRuntime

DEFAULT_DIR = Path("examples/dev")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "corral" / "dev"


@click.command()
@click.argument(
    "directory",
    default=DEFAULT_DIR,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Postgres data, keys and logs [default: ~/.local/share/corral/dev].",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Gateway address.")
@click.option("--port", default=8080, show_default=True, type=int, help="Gateway port.")
@click.option("--log-level", default="warning", show_default=True)
def dev(directory: Path, data_dir: Path | None, host: str, port: int, log_level: str) -> None:
    """Run MCPServer, MCPCatalogEntry and AccessPolicy manifests from DIRECTORY locally:
    embedded Postgres, the gateway, and every server with its shim. Ctrl-C stops everything."""
    setup_logging(log_level)
    options = DevOptions(
        manifest_dir=directory.resolve(),
        data_dir=(data_dir or default_data_dir()).resolve(),
        host=host,
        port=port,
    )
    try:
        uvloop.run(_main(options))
    except PostgresError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        hint = " (choose another --port)" if error.errno == errno.EADDRINUSE else ""
        raise click.ClickException(f"cannot start: {error}{hint}") from None


def _say(text: str) -> None:
    click.echo(text)


async def _main(options: DevOptions) -> None:
    task = asyncio.create_task(DevRuntime(options, _say).run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    _say("stopped")
