"""`corral bridge -- CMD ARGS`: serve a stdio MCP server as streamable HTTP on localhost."""

from __future__ import annotations

import click
from aiohttp import web

from corral.bridge.app import BridgeSettings, create_app
from corral.common.log import setup_logging


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--path", default="/mcp", show_default=True, help="The MCP endpoint's path.")
@click.option(
    "--sse-url",
    default=None,
    help="Instead of COMMAND: a legacy HTTP+SSE MCP server's SSE URL (one stream per session).",
)
@click.option("--log-level", default="info", show_default=True)
@click.option("--log-json", is_flag=True, help="Log JSON lines instead of plain text.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def bridge(
    host: str,
    port: int,
    path: str,
    sse_url: str | None,
    log_level: str,
    log_json: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND (a stdio MCP server) once per MCP session and serve it over HTTP.

    Each MCP session gets its own server process; ending the session, or the bridge, ends that
    process and everything it started. The server's stderr goes to the bridge's log. With
    --sse-url, each MCP session gets its own stream to a legacy HTTP+SSE server instead.
    """
    if bool(command) == bool(sse_url):
        raise click.UsageError("give either a stdio COMMAND (after --) or --sse-url, not both")
    setup_logging(log_level, json_lines=log_json)
    app = create_app(BridgeSettings(argv=command, sse_url=sse_url, path=path))
    web.run_app(
        app, host=host, port=port, print=None, shutdown_timeout=10.0, handler_cancellation=True
    )
