"""MCPCatalogEntry from the official MCP Registry `server.json` format.

Rule: pure conversion; what cannot be represented is returned as a problem, never dropped in
silence. Choice of runtime, first that fits: an npm package run over stdio (npx), a PyPI package
over stdio (uvx), an OCI image serving streamable HTTP or SSE (container), then the first remote
(remote). Environment variables, package arguments that need a value, and remote headers become
`config` items; fixed arguments and header values are kept as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from corral.api.catalog import MCPCatalogEntry

REGISTRY_NAME_ANNOTATION = "corral.dev/registry-name"
"""Annotation that keeps an imported entry's original registry name (`io.github.acme/x`)."""

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_CONFIG_NAME = re.compile(r"[^-._a-zA-Z0-9]+")


@dataclass(frozen=True)
class Imported:
    """The entry, or None when nothing in the document can run, and what was left out."""

    entry: MCPCatalogEntry | None
    problems: tuple[str, ...]


def entry_name(registry_name: str) -> str:
    """A Kubernetes name for a registry name (`io.github.acme/x` becomes `io-github-acme-x`)."""
    name = _NOT_DNS.sub("-", registry_name.lower()).strip("-")[:63].rstrip("-")
    return name or "server"


def import_server_json(doc: Mapping[str, Any]) -> Imported:
    """Convert one `server.json` document to an MCPCatalogEntry."""
    problems: list[str] = []
    config: list[dict[str, Any]] = []
    runtime = _package_runtime(doc.get("packages") or (), config, problems)
    if runtime is None:
        runtime = _remote_runtime(doc.get("remotes") or (), config, problems)
    if runtime is None:
        problems.append("no npm/pypi stdio package, OCI HTTP image or remote to run")
        return Imported(None, tuple(problems))
    registry_name = str(doc.get("name") or "")
    spec: dict[str, Any] = {
        "title": str(doc.get("title") or registry_name.rsplit("/", 1)[-1] or "server")[:256],
        "description": str(doc.get("description") or "")[:4096],
        "runtime": runtime,
    }
    if doc.get("version"):
        spec["version"] = str(doc["version"])[:256]
    repository = (doc.get("repository") or {}).get("url")
    if _https(repository):
        spec["repository"] = repository
    icon = next((i.get("src") for i in doc.get("icons") or () if _https(i.get("src"))), None)
    if icon:
        spec["icon"] = icon
    if config:
        spec["config"] = _unique(config, problems)
    metadata: dict[str, Any] = {"name": entry_name(registry_name)}
    if registry_name:
        metadata["annotations"] = {REGISTRY_NAME_ANNOTATION: registry_name}
    entry = MCPCatalogEntry.model_validate({"metadata": metadata, "spec": spec})
    return Imported(entry, tuple(problems))


def _unique(config: list[dict[str, Any]], problems: list[str]) -> list[dict[str, Any]]:
    kept: dict[str, dict[str, Any]] = {}
    for item in config:
        if item["name"] in kept:
            problems.append(f"config {item['name']!r} appears twice; kept the first")
        else:
            kept[item["name"]] = item
    return list(kept.values())


def _https(url: object) -> bool:
    return isinstance(url, str) and urlsplit(url).scheme == "https" and len(url) <= 2048


def _package_runtime(
    packages: Sequence[Mapping[str, Any]], config: list[dict[str, Any]], problems: list[str]
) -> dict[str, Any] | None:
    for package in packages:
        kind = package.get("registryType")
        transport = (package.get("transport") or {}).get("type", "stdio")
        identifier, version = package.get("identifier"), package.get("version")
        if not identifier:
            continue
        if kind in ("npm", "pypi") and transport == "stdio":
            spec = f"{identifier}@{version}" if kind == "npm" else f"{identifier}=={version}"
            member: dict[str, Any] = {"package": spec if version else identifier}
            runtime_kind = "npx" if kind == "npm" else "uvx"
        elif kind == "oci" and transport in ("streamable-http", "sse"):
            image = f"{identifier}:{version}" if version and ":" not in identifier else identifier
            member = {"image": image, "transport": transport}
            port = urlsplit((package.get("transport") or {}).get("url") or "").port
            if port:
                member["port"] = port
            runtime_kind = "container"
        else:
            problems.append(f"package {identifier} ({kind}, {transport}) is not supported; skipped")
            continue
        args = _arguments(package.get("packageArguments") or (), config, problems)
        if args:
            member["args"] = args
        config.extend(_env_config(package.get("environmentVariables") or ()))
        return {runtime_kind: member}
    return None


def _remote_runtime(
    remotes: Sequence[Mapping[str, Any]], config: list[dict[str, Any]], problems: list[str]
) -> dict[str, Any] | None:
    for remote in remotes:
        url = remote.get("url")
        if not _https(url) or "{" in str(url):
            problems.append(f"remote {url!r} is not a fixed https URL; skipped")
            continue
        headers = []
        for header in remote.get("headers") or ():
            value = header.get("value")
            if value and "{" not in value and not header.get("isSecret"):
                headers.append({"name": header["name"], "value": value})
            else:
                config.append(_config_item(header, target="header", key=header["name"]))
        member: dict[str, Any] = {"url": url}
        if headers:
            member["headers"] = headers
        return {"remote": member}
    return None


def _env_config(variables: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [_config_item(v, target="env", key=v["name"]) for v in variables if v.get("name")]


def _arguments(
    arguments: Sequence[Mapping[str, Any]], config: list[dict[str, Any]], problems: list[str]
) -> list[str]:
    fixed: list[str] = []
    for argument in arguments:
        named = argument.get("type") == "named"
        flag = str(argument.get("name") or "")
        value = argument.get("value")
        if value is not None and "{" not in str(value):
            fixed.extend([flag, str(value)] if named else [str(value)])
        elif argument.get("isSecret"):
            problems.append(f"argument {flag or argument.get('valueHint')!r} is secret; skipped")
        else:
            key = f"{flag}={{value}}" if named else "{value}"
            config.append(_config_item(argument, target="arg", key=key))
    return fixed


def _config_item(source: Mapping[str, Any], *, target: str, key: str) -> dict[str, Any]:
    label = str(source.get("name") or source.get("valueHint") or target).lstrip("-")
    item: dict[str, Any] = {
        "name": _CONFIG_NAME.sub("-", label)[:256] or target,
        "description": str(source.get("description") or "")[:1024],
        "required": bool(source.get("isRequired")),
        "secret": bool(source.get("isSecret")) and target != "arg",
        "target": target,
        "key": key,
    }
    default = source.get("default")
    if default is not None and not item["secret"]:
        item["default"] = str(default)
    return item
