"""The `corral` command line: one entry point, one subcommand per working process or tool."""

from __future__ import annotations

import click

from corral import __version__
from corral.bridge.command import bridge


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="corral")
def cli() -> None:
    """Corral: run and govern MCP servers on Kubernetes."""


cli.add_command(bridge)


def main() -> None:
    """Console-script entry point."""
    cli()
