"""`corral catalog import`: an MCP Registry `server.json` as an MCPCatalogEntry manifest.

Rule: reads one document (a file, or `-` for stdin), writes the manifest as YAML on stdout for
`kubectl apply -f -` or a GitOps repository, and says on stderr what could not be carried over.
A document that is not JSON, or from which nothing can run, is an error and writes nothing.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import click
import orjson
import yaml

from corral.api.catalog import MCPCatalogEntry
from corral.api.registry import import_server_json

_NAME_HELP = "metadata.name (default: derived from the registry name)."
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@click.group()
def catalog() -> None:
    """The catalog: MCPCatalogEntries."""


@catalog.command("import")
@click.argument("source", type=click.File("rb"))
@click.option("--namespace", "-n", default=None, help="metadata.namespace (default: none).")
@click.option("--name", default=None, help=_NAME_HELP)
def import_entry(source: Any, namespace: str | None, name: str | None) -> None:
    """Convert SOURCE (a server.json file, or - for stdin) to an MCPCatalogEntry manifest.

    Also accepts one server as the registry API answers it (`{"server": {...}, "_meta": ...}`).
    """
    where = str(getattr(source, "name", "<stdin>"))
    document = _document(source.read(), where)
    imported = import_server_json(document)
    for problem in imported.problems:
        click.echo(f"warning: {problem}", err=True)
    if imported.entry is None:
        raise click.ClickException(f"{where}: nothing in this server.json can run")
    entry = _renamed(imported.entry, namespace, name)
    manifest = entry.model_dump(by_alias=True, exclude_none=True, mode="json")
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))


def _document(raw: bytes, where: str) -> dict[str, Any]:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise click.ClickException(f"{where}: not JSON ({error})") from None
    if isinstance(document, dict) and "name" not in document:
        document = document.get("server", document)
    if not isinstance(document, dict) or not isinstance(document.get("name"), str):
        raise click.ClickException(
            f"{where}: not a server.json document (an object with a string `name`)"
        )
    return document


def _renamed(entry: MCPCatalogEntry, namespace: str | None, name: str | None) -> MCPCatalogEntry:
    manifest = entry.model_dump(by_alias=True, exclude_none=True)
    if namespace is not None:
        if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
            raise click.BadParameter(
                f"{namespace!r} is not a namespace name (lower-case letters, digits and '-', "
                "at most 63)",
                param_hint="--namespace",
            )
        manifest["metadata"]["namespace"] = namespace
    if name is not None:
        if len(name) > 253 or not all(_DNS_LABEL.fullmatch(part) for part in name.split(".")):
            raise click.BadParameter(
                f"{name!r} is not a Kubernetes object name (lower-case letters, digits, '-' "
                "and '.', at most 253)",
                param_hint="--name",
            )
        manifest["metadata"]["name"] = name
    return MCPCatalogEntry.model_validate(manifest)
