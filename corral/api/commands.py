"""`corral crds ...`: write or check the generated CustomResourceDefinitions."""

from __future__ import annotations

from pathlib import Path

import click

from corral.api.crds import stale_files, write_crds


@click.group()
def crds() -> None:
    """CustomResourceDefinitions generated from the resource models."""


@crds.command()
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("crds"),
    show_default=True,
    help="Directory for the CRD YAML files.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when the files are stale.")
def generate(output_dir: Path, check: bool) -> None:
    """Write crds/*.yaml from the models (or check that they are current)."""
    if check:
        stale = stale_files(output_dir)
        if stale:
            raise click.ClickException(
                f"stale CRDs in {output_dir}: {', '.join(stale)}; run `corral crds generate`"
            )
        click.echo(f"{output_dir}: up to date")
        return
    for path in write_crds(output_dir):
        click.echo(f"wrote {path}")
