"""The admin API for API keys: create (the key is in the response, once), list, revoke."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from corral.gateway.appkeys import API_KEY_AUTHENTICATOR, POOL, require_admin
from corral.gateway.bearer import json_error
from corral.store import api_keys
from corral.store.errors import InvalidInputError

MAX_LIFETIME_DAYS = 3650


def key_json(key: api_keys.ApiKey) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")

    return {
        "prefix": key.prefix,
        "name": key.name,
        "user": key.user_subject,
        "email": key.user_email,
        "groups": list(key.groups),
        "servers": None if key.servers is None else list(key.servers),
        "created_at": when(key.created_at),
        "expires_at": when(key.expires_at),
        "revoked_at": when(key.revoked_at),
    }


def _strings(body: dict[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"{name} must be a list of strings")
    return value


def parse_create(body: Any, now: datetime) -> dict[str, Any]:
    """The arguments for ``api_keys.create_key`` from a request body."""
    if not isinstance(body, dict):
        raise InvalidInputError("the body must be a JSON object")
    user = body.get("user")
    if not isinstance(user, str) or not user:
        raise InvalidInputError("user is required (the subject the key acts as)")
    days = body.get("expires_in_days", 90)
    if days is not None and (
        not isinstance(days, int) or isinstance(days, bool) or not 0 < days <= MAX_LIFETIME_DAYS
    ):
        raise InvalidInputError(
            f"expires_in_days must be a whole number from 1 to {MAX_LIFETIME_DAYS}, or null"
        )
    for name in ("email", "name"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise InvalidInputError(f"{name} must be a string")
    return {
        "user_subject": user,
        "user_email": body.get("email"),
        "name": body.get("name") or "",
        "groups": _strings(body, "groups") or [],
        "servers": _strings(body, "servers"),
        "expires_at": None if days is None else now + timedelta(days=days),
    }


async def create_api_key(request: web.Request) -> web.Response:
    """POST /api/apikeys."""
    await require_admin(request)
    try:
        arguments = parse_create(orjson.loads(await request.read()), datetime.now(UTC))
        async with request.app[POOL].acquire() as connection:
            new, record = await api_keys.create_key(connection, **arguments)
    except orjson.JSONDecodeError:
        raise json_error(400, "invalid_request", "the body is not JSON") from None
    except InvalidInputError as error:
        raise json_error(400, "invalid_request", str(error)) from None
    body = orjson.dumps({"key": new.token, **key_json(record)})
    return web.Response(status=201, body=body, content_type="application/json")


async def list_api_keys(request: web.Request) -> web.Response:
    """GET /api/apikeys[?user=...]."""
    await require_admin(request)
    async with request.app[POOL].acquire() as connection:
        keys = await api_keys.list_keys(connection, user_subject=request.query.get("user"))
    body = orjson.dumps({"keys": [key_json(k) for k in keys]})
    return web.Response(body=body, content_type="application/json")


async def revoke_api_key(request: web.Request) -> web.Response:
    """DELETE /api/apikeys/{prefix}."""
    await require_admin(request)
    prefix = request.match_info["prefix"]
    async with request.app[POOL].acquire() as connection:
        revoked = await api_keys.revoke_key(connection, prefix)
    if not revoked:
        raise json_error(404, "not_found", f"no active key with prefix {prefix!r}")
    request.app[API_KEY_AUTHENTICATOR].forget(prefix)
    return web.Response(status=204)
