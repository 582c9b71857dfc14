"""The `corral` command line: one entry point, one subcommand per working process or tool.

Subcommands are imported when they run (``SUBCOMMANDS``), so each process loads only its own
code: a shim or bridge starts without importing the operator, Kubernetes client or CRD tooling.
"""

from __future__ import annotations

import importlib

import click

from corral import __version__, native

SUBCOMMANDS = {
    "apikey": "corral.gateway.apikey_command:apikey",
    "bridge": "corral.bridge.command:bridge",
    "catalog": "corral.api.catalog_command:catalog",
    "crds": "corral.api.commands:crds",
    "dev": "corral.dev.command:dev",
    "gateway": "corral.gateway.command:gateway",
    "operator": "corral.operator.command:operator",
    "shim": "corral.shim.command:shim",
}


class LazyGroup(click.Group):
    """A group whose ``SUBCOMMANDS`` are imported on first use; ``add_command`` still works."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in SUBCOMMANDS:
            module, _, attribute = SUBCOMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="corral")
def cli() -> None:
    """Corral: run and govern MCP servers on Kubernetes."""


def main() -> None:
    """Console-script entry point; refuses to start on compiled modules older than their source."""
    try:
        native.check()
    except native.StaleBuildError as exc:
        raise SystemExit(f"corral: {exc}") from None
    cli()
