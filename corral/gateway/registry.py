"""The registry listings, shaped: the catalog in the MCP Registry API format (``/v0/servers``)
and the servers a caller may use (``/api/servers``).

Rule: pure functions from directory data to response bodies, no I/O; ``registry_api`` holds the
handlers. The catalog follows the generic MCP Registry API (modelcontextprotocol/registry,
docs/reference/api/openapi.yaml): a ``ServerList`` of ``ServerResponse`` objects, each a
``server.json`` document under ``server`` and registry metadata under ``_meta``.

How an MCPCatalogEntry becomes ``server.json``:

- ``name`` is ``{namespace}/{name}`` (it fits the registry's name pattern and is unique);
  ``version`` is ``spec.version``, or ``0.0.0`` when the entry has none.
- ``description`` is cut to the registry's 100 characters (the title when empty); the whole
  text, categories, config items, tool preview and runtime details not expressible in
  ``server.json`` go under ``_meta["dev.corral/catalog"]``.
- The runtime becomes one package (npx: npm, uvx: pypi, container and stdio: oci) or, for a
  remote, one streamable-http remote. Config items become environment variables, arguments or
  headers (file items exist only in ``_meta``). Secret values never appear: a header taken from
  a Secret is listed by name only.

Pagination: entries are ordered by name; a cursor is the last name of the page, base64url
encoded, so every entry present throughout a walk is returned exactly once.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from corral.api.catalog import ConfigItem, MCPCatalogEntry
from corral.api.policy import Caller
from corral.api.registry import REGISTRY_NAME_ANNOTATION
from corral.api.runtimes import Runtime
from corral.gateway.authn import Principal
from corral.gateway.directory import ServerDirectory, ServerEntry, ServerStatus, catalog_key

CORRAL_META = "dev.corral/catalog"
OFFICIAL_META = "io.modelcontextprotocol.registry/official"
DEFAULT_LIMIT = 30
MAX_LIMIT = 100
TEXT_MAX = 100
ICON_MAX = 255
UNVERSIONED = "0.0.0"
LATEST = "latest"
NAME_PATTERN = re.compile(r"[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+")
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,400}")
_SOURCES = {"github.com": "github", "gitlab.com": "gitlab", "bitbucket.org": "bitbucket"}


class QueryError(ValueError):
    """A query parameter the registry cannot use; the message says which and why."""


@dataclass(frozen=True)
class ListQuery:
    """A ``GET /v0/servers`` request, validated."""

    cursor: str | None = None
    limit: int = DEFAULT_LIMIT
    search: str | None = None
    version: str | None = None
    updated_since: datetime | None = None


def parse_list_query(params: Mapping[str, str]) -> ListQuery:
    """The list query from URL parameters, or a ``QueryError``."""
    limit = DEFAULT_LIMIT
    if "limit" in params:
        text = params["limit"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise QueryError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {text!r}")
        limit = int(text)
    cursor = params.get("cursor") or None
    if cursor is not None:
        decode_cursor(cursor)
    since = None
    if params.get("updated_since"):
        since = _timestamp(params["updated_since"])
        if since is None:
            raise QueryError(
                "updated_since must be an RFC 3339 time with a zone, like 2025-08-07T13:15:04Z"
            )
    return ListQuery(
        cursor=cursor,
        limit=limit,
        search=params.get("search") or None,
        version=params.get("version") or None,
        updated_since=since,
    )


def encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The name a cursor continues after, or a ``QueryError`` for one this registry never
    issued."""
    invalid = QueryError(
        "cursor is not one this registry issued: pass metadata.nextCursor of the previous "
        "page unchanged, or leave cursor out to start from the first page"
    )
    if _CURSOR.fullmatch(cursor) is None:
        raise invalid
    try:
        name = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise invalid from None
    if NAME_PATTERN.fullmatch(name) is None:
        raise invalid
    return name


def registry_name(entry: MCPCatalogEntry) -> str:
    namespace, name = catalog_key(entry)
    return f"{namespace}/{name}"


def version_of(entry: MCPCatalogEntry) -> str:
    return entry.spec.version or UNVERSIONED


def server_list(entries: Sequence[MCPCatalogEntry], query: ListQuery) -> dict[str, Any]:
    """One page of the catalog as a ``ServerList``."""
    after = None if query.cursor is None else decode_cursor(query.cursor)
    named = sorted(((registry_name(e), e) for e in entries), key=lambda pair: pair[0])
    page: list[tuple[str, MCPCatalogEntry]] = []
    more = False
    for name, entry in named:
        if (after is not None and name <= after) or not _matches(name, entry, query):
            continue
        if len(page) == query.limit:
            more = True
            break
        page.append((name, entry))
    metadata: dict[str, Any] = {"count": len(page)}
    if more:
        metadata["nextCursor"] = encode_cursor(page[-1][0])
    return {"servers": [server_response(e) for _, e in page], "metadata": metadata}


def _matches(name: str, entry: MCPCatalogEntry, query: ListQuery) -> bool:
    if query.search is not None and query.search.lower() not in name.lower():
        return False
    if query.version not in (None, LATEST) and version_of(entry) != query.version:
        return False
    if query.updated_since is not None:
        updated = updated_at(entry)
        return updated is not None and updated >= query.updated_since
    return True


def find_entry(entries: Sequence[MCPCatalogEntry], name: str) -> MCPCatalogEntry | None:
    return next((e for e in entries if registry_name(e) == name), None)


def version_matches(entry: MCPCatalogEntry, version: str) -> bool:
    """Whether ``version`` names the entry's only version (``latest`` always does)."""
    return version in (LATEST, version_of(entry))


def server_response(entry: MCPCatalogEntry) -> dict[str, Any]:
    """One ``ServerResponse``: the ``server.json`` document and the registry's metadata."""
    official: dict[str, Any] = {"status": "active", "isLatest": True}
    published, updated = published_at(entry), updated_at(entry)
    if published is not None:
        official["publishedAt"] = _rfc3339(published)
    if updated is not None:
        official["updatedAt"] = _rfc3339(updated)
    return {
        "server": server_json(entry),
        "_meta": {OFFICIAL_META: official, CORRAL_META: corral_meta(entry)},
    }


def server_json(entry: MCPCatalogEntry) -> dict[str, Any]:
    """The entry as a ``server.json`` document (see the module docstring)."""
    spec = entry.spec
    document: dict[str, Any] = {
        "name": registry_name(entry),
        "description": _short(spec.description or spec.title),
        "title": _short(spec.title),
        "version": version_of(entry),
    }
    if spec.repository is not None:
        host = (urlsplit(spec.repository).hostname or "").lower()
        document["repository"] = {"url": spec.repository, "source": _SOURCES.get(host, host)}
    if spec.icon is not None and spec.icon.startswith("https://") and len(spec.icon) <= ICON_MAX:
        document["icons"] = [{"src": spec.icon}]
    config = spec.config or ()
    if spec.runtime.remote is not None:
        document["remotes"] = [_remote(spec.runtime, config)]
    else:
        document["packages"] = [_package(spec.runtime, config)]
    return document


def _short(text: str) -> str:
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 1].rstrip() + "…"


def _package(runtime: Runtime, config: Sequence[ConfigItem]) -> dict[str, Any]:
    package: dict[str, Any]
    args: Sequence[str] = ()
    if runtime.npx is not None:
        identifier, version = _split(runtime.npx.package, "@", start=1)
        package = {"registryType": "npm", "identifier": identifier, "runtimeHint": "npx"}
        args = runtime.npx.args or ()
    elif runtime.uvx is not None:
        identifier, version = _split(runtime.uvx.package, "==")
        package = {"registryType": "pypi", "identifier": identifier, "runtimeHint": "uvx"}
        args = runtime.uvx.args or ()
    elif runtime.container is not None:
        container = runtime.container
        version = None
        package = {"registryType": "oci", "identifier": container.image, "runtimeHint": "docker"}
        url = f"http://localhost:{container.port}{container.path}"
        package["transport"] = {"type": container.transport, "url": url}
        args = container.args or ()
    elif runtime.stdio is not None:
        version = None
        package = {
            "registryType": "oci",
            "identifier": runtime.stdio.image,
            "runtimeHint": "docker",
        }
        args = runtime.stdio.args or ()
    else:
        raise ValueError("runtime sets no member")
    if version:
        package["version"] = version
    package.setdefault("transport", {"type": "stdio"})
    arguments = [{"type": "positional", "value": arg} for arg in args]
    arguments += [_argument(item) for item in config if item.target == "arg"]
    if arguments:
        package["packageArguments"] = arguments
    variables = [_input(item, item.key or item.name) for item in config if item.target == "env"]
    if variables:
        package["environmentVariables"] = variables
    return package


def _split(spec: str, separator: str, *, start: int = 0) -> tuple[str, str | None]:
    """``name`` and ``version`` of a package spec (``@scope/x@1.0``, ``x==1.0``)."""
    index = spec.find(separator, start)
    if index <= 0:
        return spec, None
    return spec[:index], spec[index + len(separator) :] or None


def _remote(runtime: Runtime, config: Sequence[ConfigItem]) -> dict[str, Any]:
    remote = runtime.remote
    assert remote is not None
    headers: list[dict[str, Any]] = []
    for header in remote.headers or ():
        if header.value is not None:
            headers.append({"name": header.name, "value": header.value})
        else:
            headers.append({"name": header.name, "isSecret": True})
    headers += [_input(item, item.key or item.name) for item in config if item.target == "header"]
    document: dict[str, Any] = {"type": "streamable-http", "url": remote.url}
    if headers:
        document["headers"] = headers
    return document


def _input(item: ConfigItem, name: str) -> dict[str, Any]:
    described: dict[str, Any] = {"name": name}
    if item.description:
        described["description"] = item.description
    described["isRequired"] = item.required
    described["isSecret"] = item.secret
    if item.default is not None and not item.secret:
        described["default"] = item.default
    return described


def _argument(item: ConfigItem) -> dict[str, Any]:
    key = item.key or "{value}"
    if key.startswith("-"):
        argument = _input(item, key.partition("=")[0])
        argument["type"] = "named"
    else:
        argument = _input(item, item.name)
        argument.pop("name")
        argument.update({"type": "positional", "valueHint": item.name})
    argument.pop("isSecret")
    return argument


def corral_meta(entry: MCPCatalogEntry) -> dict[str, Any]:
    """What Corral knows of an entry beyond ``server.json``."""
    namespace, name = catalog_key(entry)
    spec = entry.spec
    meta: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "title": spec.title,
        "description": spec.description,
        "runtime": spec.runtime.kind,
        "versioned": spec.version is not None,
    }
    imported_as = (entry.metadata.annotations or {}).get(REGISTRY_NAME_ANNOTATION)
    if imported_as:
        meta["registryName"] = imported_as
    if spec.categories:
        meta["categories"] = list(spec.categories)
    if spec.config:
        meta["config"] = [item.model_dump(by_alias=True, exclude_none=True) for item in spec.config]
    if spec.tool_preview:
        meta["toolPreview"] = [
            tool.model_dump(by_alias=True, exclude_none=True) for tool in spec.tool_preview
        ]
    if entry.status is not None and entry.status.servers is not None:
        meta["servers"] = entry.status.servers
    return meta


def published_at(entry: MCPCatalogEntry) -> datetime | None:
    """When the API server created the entry (``metadata.creationTimestamp``)."""
    return _timestamp(_extra(entry).get("creationTimestamp"))


def updated_at(entry: MCPCatalogEntry) -> datetime | None:
    """When the entry's spec or metadata last changed, from ``metadata.managedFields`` (status
    writes excluded), else its creation."""
    times = [
        _timestamp(field.get("time"))
        for field in _extra(entry).get("managedFields") or ()
        if isinstance(field, dict) and not field.get("subresource")
    ]
    known = [t for t in times if t is not None]
    return max(known) if known else published_at(entry)


def _extra(entry: MCPCatalogEntry) -> dict[str, Any]:
    return entry.metadata.model_extra or {}


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _rfc3339(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def connect_url(base_url: str, server: ServerEntry) -> str:
    return f"{base_url.rstrip('/')}/mcp/{server.namespace}/{server.name}"


def may_use(directory: ServerDirectory, principal: Principal, server: ServerEntry) -> bool:
    """The gateway's own admission check: the credential reaches the server and, where the
    directory enforces policies, some rule could let the caller in."""
    if not principal.may_reach(server.namespace, server.name):
        return False
    caller = Caller(principal.user, principal.email, frozenset(principal.groups))
    decision = directory.may_access(caller, server)
    return decision is None or decision.allowed


def server_listing(
    server: ServerEntry,
    status: ServerStatus,
    entry: MCPCatalogEntry | None,
    base_url: str,
) -> dict[str, Any]:
    """One server of ``/api/servers``: where to connect, what it is, how it is doing."""
    return {
        "namespace": server.namespace,
        "name": server.name,
        "title": None if entry is None else entry.spec.title,
        "description": None if entry is None else entry.spec.description,
        "tenancy": server.tenancy,
        "url": connect_url(base_url, server),
        "catalogEntry": server.catalog_entry,
        "ready": status.ready,
        "status": {"reason": status.reason, "message": status.message},
        "toolCount": status.tool_count,
        "tools": None if status.tools is None else list(status.tools),
    }


def server_listings(
    directory: ServerDirectory, principal: Principal, base_url: str
) -> list[dict[str, Any]]:
    """``/api/servers``: every server ``principal`` may use, in route order, with the title
    and description of the catalog entry it instantiates (in its namespace)."""
    entries = {catalog_key(e): e for e in directory.catalog()}
    listings = []
    for server in directory.servers():
        if not may_use(directory, principal, server):
            continue
        entry = None
        if server.catalog_entry is not None:
            entry = entries.get((server.namespace, server.catalog_entry))
        listings.append(server_listing(server, directory.status(server), entry, base_url))
    return listings
