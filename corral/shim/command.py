"""`corral shim --config PATH`: the sidecar in every MCP server pod."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import click
import uvloop

from corral import native
from corral.common.assertion import UsedIds
from corral.common.log import setup_logging
from corral.shim.app import serve
from corral.shim.config import ConfigError, load_config
from corral.shim.metrics import ShimMetrics
from corral.shim.runtime import build_runtime

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The shim configuration file (YAML or JSON; see docs/shim.md).",
)
@click.option("--log-level", default="info", show_default=True)
@click.option("--log-json", is_flag=True, help="Log JSON lines instead of plain text.")
def shim(config_path: Path, log_level: str, log_json: bool) -> None:
    """Serve one MCP server: verify identity, authorize, filter and audit every message."""
    setup_logging(log_level, json_lines=log_json)
    try:
        build_runtime(load_config(config_path), ShimMetrics(), UsedIds())
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(f"{config_path}: {exc}") from None
    log.info("code: %s", native.describe())
    uvloop.run(_main(config_path))


async def _main(config_path: Path) -> None:
    task = asyncio.create_task(serve(config_path))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
