"""The registry endpoints: the catalog as an MCP Registry (``/v0/servers``, ``/v0.1/servers``,
read without credentials, as registries are) and the servers the caller may use
(``/api/servers``, authenticated). Thin handlers over ``corral.gateway.registry``; both read
the ``ServerDirectory`` the MCP routes use, never the Kubernetes API or the database.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from corral.api.catalog import MCPCatalogEntry
from corral.gateway import registry
from corral.gateway.appkeys import SETTINGS, require_principal
from corral.gateway.bearer import json_error
from corral.gateway.directory import ServerDirectory

DIRECTORY = web.AppKey("directory", ServerDirectory)
REGISTRY_PREFIXES = ("/v0", "/v0.1")


def routes() -> list[web.RouteDef]:
    """Every registry route (the same API under both registry version prefixes)."""
    table = [web.get("/api/servers", list_usable_servers)]
    for prefix in REGISTRY_PREFIXES:
        table += [
            web.get(f"{prefix}/servers", list_catalog),
            web.get(f"{prefix}/servers/{{name}}", get_latest),
            web.get(f"{prefix}/servers/{{name}}/versions", list_versions),
            web.get(f"{prefix}/servers/{{name}}/versions/{{version}}", get_version),
        ]
    return table


async def list_catalog(request: web.Request) -> web.Response:
    """``GET /v0/servers?cursor=&limit=&search=&version=&updated_since=``."""
    try:
        query = registry.parse_list_query(request.query)
    except registry.QueryError as error:
        raise json_error(400, "invalid_query", str(error)) from None
    body = registry.server_list(request.app[DIRECTORY].catalog(), query)
    return _json(body)


async def get_latest(request: web.Request) -> web.Response:
    """``GET /v0/servers/{serverName}``: the entry (its only version is the latest)."""
    return _json(registry.server_response(_entry(request)))


async def list_versions(request: web.Request) -> web.Response:
    """``GET /v0/servers/{serverName}/versions``: a ``ServerList`` of the one version."""
    entry = _entry(request)
    return _json({"servers": [registry.server_response(entry)], "metadata": {"count": 1}})


async def get_version(request: web.Request) -> web.Response:
    """``GET /v0/servers/{serverName}/versions/{version}`` (``latest`` or the exact one)."""
    entry = _entry(request)
    version = request.match_info["version"]
    if not registry.version_matches(entry, version):
        raise json_error(
            404,
            "not_found",
            f"{registry.registry_name(entry)} has no version {version!r} "
            f"(it offers {registry.version_of(entry)!r})",
        )
    return _json(registry.server_response(entry))


def _entry(request: web.Request) -> MCPCatalogEntry:
    name = request.match_info["name"]
    entry = registry.find_entry(request.app[DIRECTORY].catalog(), name)
    if entry is None:
        raise json_error(
            404,
            "not_found",
            f"no server {name!r} in this registry (names are namespace/name, URL-encoded)",
        )
    return entry


async def list_usable_servers(request: web.Request) -> web.Response:
    """``GET /api/servers``: the MCP servers the caller may use, with connect URLs."""
    principal = await require_principal(request)
    base_url = request.app[SETTINGS].public_base_url
    servers = registry.server_listings(request.app[DIRECTORY], principal, base_url)
    return _json({"servers": servers})


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
