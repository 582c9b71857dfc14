"""Reading a directory of manifests: MCPServer, MCPCatalogEntry and AccessPolicy YAML.

Rule: the cluster's models validate every object, so `corral dev` accepts exactly what the API
server would. Reading is all-or-nothing: any problem (a file that is not YAML, an unknown kind, a
field the models refuse, two objects with one name) raises `ManifestError`, whose message names
the file, the object and the field, and nothing from that read is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from corral.api.catalog import MCPCatalogEntry
from corral.api.policies import AccessPolicy
from corral.api.servers import MCPServer

DEFAULT_NAMESPACE = "default"
SUFFIXES = (".yaml", ".yml", ".json")
KINDS: Mapping[str, type[MCPServer] | type[MCPCatalogEntry] | type[AccessPolicy]] = {
    "MCPServer": MCPServer,
    "MCPCatalogEntry": MCPCatalogEntry,
    "AccessPolicy": AccessPolicy,
}


class ManifestError(Exception):
    """The manifests cannot be used; the message lists every problem with file, object, field."""


@dataclass(frozen=True)
class Manifests:
    """Every object found, namespaces filled in (``default`` when a manifest names none)."""

    servers: tuple[MCPServer, ...] = ()
    catalog_entries: tuple[MCPCatalogEntry, ...] = ()
    policies: tuple[AccessPolicy, ...] = ()
    files: tuple[Path, ...] = field(default=())

    def catalog_entry(self, namespace: str, name: str) -> MCPCatalogEntry | None:
        """The entry ``name`` in ``namespace``, if declared."""
        for entry in self.catalog_entries:
            if entry.metadata.namespace == namespace and entry.metadata.name == name:
                return entry
        return None


def manifest_files(directory: Path) -> list[Path]:
    """The manifest files under ``directory`` (recursively), in a stable order."""
    if not directory.is_dir():
        raise ManifestError(f"{directory}: not a directory of manifests")
    return sorted(p for p in directory.rglob("*") if p.suffix in SUFFIXES and p.is_file())


def load_manifests(directory: Path) -> Manifests:
    """Read and validate every manifest under ``directory``."""
    files = manifest_files(directory)
    problems: list[str] = []
    objects: list[Any] = []
    for path in files:
        objects.extend(_read_file(path, directory, problems))
    _check_unique(objects, problems)
    if problems:
        raise ManifestError("\n".join(problems))
    return Manifests(
        servers=tuple(o for _, o in objects if isinstance(o, MCPServer)),
        catalog_entries=tuple(o for _, o in objects if isinstance(o, MCPCatalogEntry)),
        policies=tuple(o for _, o in objects if isinstance(o, AccessPolicy)),
        files=tuple(files),
    )


def _read_file(path: Path, root: Path, problems: list[str]) -> list[tuple[str, Any]]:
    shown = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        problems.append(f"{shown}: cannot read it as YAML: {error}")
        return []
    found = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        parsed = _parse(document, f"{shown} (document {index + 1})", problems)
        if parsed is not None:
            found.append((shown, parsed))
    return found


def _parse(document: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(document, dict):
        problems.append(f"{where}: expected a mapping with apiVersion, kind, metadata and spec")
        return None
    kind = document.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    name = _name_of(document)
    if model is None:
        problems.append(
            f"{where}: kind {kind!r} of {name!r} is not one corral dev runs; "
            f"use one of {', '.join(KINDS)}"
        )
        return None
    if name == "<unnamed>":
        problems.append(f"{where}: {kind} has no metadata.name: give it a name")
        return None
    metadata = dict(document.get("metadata") or {})
    metadata.setdefault("namespace", DEFAULT_NAMESPACE)
    try:
        return model.model_validate({**document, "metadata": metadata})
    except ValidationError as error:
        problems.extend(f"{where}: {kind} {name!r}: {line}" for line in _field_errors(error))
        return None


def _name_of(document: Mapping[str, Any]) -> str:
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return str(name) if name else "<unnamed>"


def _field_errors(error: ValidationError) -> Iterable[str]:
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(object)"
        message = item["msg"].removeprefix("Value error, ")
        yield f"field {location}: {message}"


def _check_unique(objects: list[tuple[str, Any]], problems: list[str]) -> None:
    seen: dict[tuple[str, str | None, str | None], str] = {}
    for shown, obj in objects:
        key = (type(obj).__name__, obj.metadata.namespace, obj.metadata.name)
        if key in seen:
            problems.append(
                f"{shown}: {key[0]} {key[2]!r} in namespace {key[1]!r} is also declared in "
                f"{seen[key]}: give each object its own name"
            )
        seen.setdefault(key, shown)
