"""The `corral` command line: one entry point, one subcommand per working process or tool."""

from __future__ import annotations

import click

from corral import __version__
from corral.api.commands import crds
from corral.bridge.command import bridge
from corral.dev.command import dev
from corral.gateway.apikey_command import apikey
from corral.gateway.command import gateway
from corral.operator.command import operator
from corral.shim.command import shim


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="corral")
def cli() -> None:
    """Corral: run and govern MCP servers on Kubernetes."""


cli.add_command(apikey)
cli.add_command(bridge)
cli.add_command(dev)
cli.add_command(gateway)
cli.add_command(shim)
cli.add_command(operator)
cli.add_command(crds)


def main() -> None:
    """Console-script entry point."""
    cli()
