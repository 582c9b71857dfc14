"""Typed application keys: what the gateway app shares between handlers (no globals)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from corral.gateway.authn import ApiKeyAuthenticator, Authenticator, Principal
from corral.gateway.bearer import TokenDirectory, bearer_token, json_error, unauthorized
from corral.gateway.metrics import GatewayMetrics
from corral.gateway.settings import GatewaySettings
from corral.store.audit import AuditWriter

SETTINGS = web.AppKey("settings", GatewaySettings)
POOL = web.AppKey("pool", asyncpg.Pool)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
API_KEY_AUTHENTICATOR = web.AppKey("api_key_authenticator", ApiKeyAuthenticator)
AUDIT_WRITER = web.AppKey("audit_writer", AuditWriter)
SHIM_TOKENS = web.AppKey("shim_tokens", TokenDirectory)
METRICS = web.AppKey("metrics", GatewayMetrics)

API_RESOURCE = "/api"


async def require_principal(request: web.Request) -> Principal:
    """The caller of an ``/api`` route, or a 401 naming the protected resource metadata."""
    settings = request.app[SETTINGS]
    token = bearer_token(request.headers)
    principal = None
    if token is not None:
        principal = await request.app[AUTHENTICATOR].authenticate(token)
    result = "ok" if principal is not None else "missing" if token is None else "invalid"
    request.app[METRICS].count_authentication(result)
    if principal is None:
        raise unauthorized(
            settings.public_base_url, API_RESOURCE, token_presented=token is not None
        )
    return principal


def is_admin(settings: GatewaySettings, principal: Principal) -> bool:
    return not settings.roles.admin_groups.isdisjoint(principal.groups)


def is_auditor(settings: GatewaySettings, principal: Principal) -> bool:
    return not settings.roles.auditor_groups.isdisjoint(principal.groups)


async def require_admin(request: web.Request) -> Principal:
    principal = await require_principal(request)
    if not is_admin(request.app[SETTINGS], principal):
        raise json_error(403, "forbidden", "this needs the admin role (an admin group)")
    return principal
