"""Checks of the MCP Registry API response shapes, written from the generic registry OpenAPI
document (modelcontextprotocol/registry, docs/reference/api/openapi.yaml, version 2025-12-01):
``ServerList``, ``ServerResponse``, ``ServerDetail`` (server.json), ``Package``, transports,
arguments and key-value inputs. Each check raises ``AssertionError`` naming the path that broke.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

NAME = re.compile(r"^[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+$")
SHA256 = re.compile(r"^[a-f0-9]{64}$")
SIZES = re.compile(r"^(\d+x\d+|any)$")
OFFICIAL = "io.modelcontextprotocol.registry/official"
DETAIL_FIELDS = {
    "name", "description", "title", "repository", "version", "websiteUrl", "icons", "$schema",
    "packages", "remotes", "_meta",
}  # fmt: skip
PACKAGE_FIELDS = {
    "registryType", "registryBaseUrl", "identifier", "version", "fileSha256", "runtimeHint",
    "transport", "runtimeArguments", "packageArguments", "environmentVariables",
}  # fmt: skip
INPUT_FIELDS = {
    "description", "isRequired", "format", "value", "isSecret", "default", "placeholder",
    "choices", "variables",
}  # fmt: skip


def check_server_list(body: Any, where: str = "$") -> None:
    _object(body, where, required={"servers"}, allowed={"servers", "metadata"})
    _array(body["servers"], f"{where}.servers")
    for index, item in enumerate(body["servers"]):
        check_server_response(item, f"{where}.servers[{index}]")
    if "metadata" in body:
        metadata = body["metadata"]
        _object(metadata, f"{where}.metadata", allowed={"nextCursor", "count"})
        if "nextCursor" in metadata:
            assert isinstance(metadata["nextCursor"], str), f"{where}.metadata.nextCursor"
        if "count" in metadata:
            count = metadata["count"]
            assert type(count) is int, f"{where}.metadata.count is not an integer"


def check_server_response(doc: Any, where: str = "$") -> None:
    _object(doc, where, required={"server"}, allowed={"server", "_meta"})
    check_server_detail(doc["server"], f"{where}.server")
    if "_meta" in doc:
        meta = doc["_meta"]
        _object(meta, f"{where}._meta")
        if OFFICIAL in meta:
            official = meta[OFFICIAL]
            path = f"{where}._meta.official"
            _object(official, path, allowed={"status", "publishedAt", "updatedAt", "isLatest"})
            if "status" in official:
                assert official["status"] in ("active", "deprecated", "deleted"), path
            for key in ("publishedAt", "updatedAt"):
                if key in official:
                    _date_time(official[key], f"{path}.{key}")
            if "isLatest" in official:
                assert isinstance(official["isLatest"], bool), f"{path}.isLatest"


def check_server_detail(doc: Any, where: str) -> None:
    _object(doc, where, required={"name", "description", "version"}, allowed=DETAIL_FIELDS)
    _string(doc["name"], f"{where}.name", 3, 200, NAME)
    _string(doc["description"], f"{where}.description", 1, 100)
    _string(doc["version"], f"{where}.version", 0, 255)
    if "title" in doc:
        _string(doc["title"], f"{where}.title", 1, 100)
    if "repository" in doc:
        repository = doc["repository"]
        path = f"{where}.repository"
        _object(
            repository,
            path,
            required={"url", "source"},
            allowed={"url", "source", "id", "subfolder"},
        )
        _uri(repository["url"], f"{path}.url")
        _string(repository["source"], f"{path}.source", 0, None)
    if "websiteUrl" in doc:
        _uri(doc["websiteUrl"], f"{where}.websiteUrl")
    for index, icon in enumerate(doc.get("icons", [])):
        path = f"{where}.icons[{index}]"
        _object(icon, path, required={"src"}, allowed={"src", "mimeType", "sizes", "theme"})
        _uri(icon["src"], f"{path}.src")
        assert len(icon["src"]) <= 255, f"{path}.src is longer than 255"
        for size in icon.get("sizes", []):
            assert SIZES.fullmatch(size), f"{path}.sizes"
    for index, package in enumerate(doc.get("packages", [])):
        check_package(package, f"{where}.packages[{index}]")
    for index, remote in enumerate(doc.get("remotes", [])):
        path = f"{where}.remotes[{index}]"
        assert remote.get("type") in ("streamable-http", "sse"), f"{path}.type"
        check_transport(remote, path)


def check_package(package: Any, where: str) -> None:
    _object(
        package, where, required={"registryType", "identifier", "transport"}, allowed=PACKAGE_FIELDS
    )
    _string(package["registryType"], f"{where}.registryType", 0, None)
    _string(package["identifier"], f"{where}.identifier", 0, None)
    if "version" in package:
        _string(package["version"], f"{where}.version", 1, None)
        assert package["version"] != "latest", f"{where}.version may not be 'latest'"
    if "registryBaseUrl" in package:
        _uri(package["registryBaseUrl"], f"{where}.registryBaseUrl")
    if "fileSha256" in package:
        assert SHA256.fullmatch(package["fileSha256"]), f"{where}.fileSha256"
    check_transport(package["transport"], f"{where}.transport")
    for key in ("runtimeArguments", "packageArguments"):
        for index, argument in enumerate(package.get(key, [])):
            check_argument(argument, f"{where}.{key}[{index}]")
    for index, variable in enumerate(package.get("environmentVariables", [])):
        check_key_value(variable, f"{where}.environmentVariables[{index}]")


def check_transport(transport: Any, where: str) -> None:
    _object(transport, where, required={"type"})
    kind = transport["type"]
    assert kind in ("stdio", "streamable-http", "sse"), f"{where}.type is {kind!r}"
    if kind == "stdio":
        assert set(transport) == {"type"}, f"{where}: stdio takes only type"
        return
    _object(transport, where, required={"type", "url"}, allowed={"type", "url", "headers"})
    _string(transport["url"], f"{where}.url", 1, None)
    for index, header in enumerate(transport.get("headers", [])):
        check_key_value(header, f"{where}.headers[{index}]")


def check_argument(argument: Any, where: str) -> None:
    kind = argument.get("type")
    if kind == "positional":
        allowed = INPUT_FIELDS | {"type", "valueHint", "isRepeated"}
        _object(argument, where, required={"type"}, allowed=allowed)
        assert "valueHint" in argument or "value" in argument, f"{where}: valueHint or value"
    else:
        assert kind == "named", f"{where}.type is {kind!r}"
        allowed = INPUT_FIELDS | {"type", "name", "isRepeated"}
        _object(argument, where, required={"type", "name"}, allowed=allowed)
    _input(argument, where)


def check_key_value(item: Any, where: str) -> None:
    _object(item, where, required={"name"}, allowed=INPUT_FIELDS | {"name"})
    _string(item["name"], f"{where}.name", 0, None)
    _input(item, where)


def _input(item: dict[str, Any], where: str) -> None:
    for key in ("isRequired", "isSecret"):
        if key in item:
            assert isinstance(item[key], bool), f"{where}.{key}"
    for key in ("description", "value", "default", "placeholder"):
        if key in item:
            assert isinstance(item[key], str), f"{where}.{key}"
    if "format" in item:
        assert item["format"] in ("string", "number", "boolean", "filepath"), f"{where}.format"


def _object(
    value: Any, where: str, *, required: set[str] = frozenset(), allowed: set[str] | None = None
) -> None:
    assert isinstance(value, dict), f"{where} is not an object"
    missing = required - set(value)
    assert not missing, f"{where} lacks {sorted(missing)}"
    if allowed is not None:
        unknown = set(value) - allowed
        assert not unknown, f"{where} has fields the schema does not define: {sorted(unknown)}"


def _array(value: Any, where: str) -> None:
    assert isinstance(value, list), f"{where} is not an array"


def _string(
    value: Any, where: str, least: int, most: int | None, pattern: re.Pattern[str] | None = None
) -> None:
    assert isinstance(value, str), f"{where} is not a string"
    assert len(value) >= least, f"{where} is shorter than {least}"
    assert most is None or len(value) <= most, f"{where} is longer than {most}: {value!r}"
    assert pattern is None or pattern.fullmatch(value), f"{where} does not match {pattern.pattern}"


def _uri(value: Any, where: str) -> None:
    assert isinstance(value, str), f"{where} is not a string"
    assert re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", value), f"{where} is not a URI"


def _date_time(value: Any, where: str) -> None:
    assert isinstance(value, str), where
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{where} has no zone"
