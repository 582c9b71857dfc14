"""Bearer credentials at the HTTP edge: reading them, and the 401/403 answers (RFC 6750, RFC 9728).

A token is read only from the ``Authorization`` header, never from the query string. A 401 names
the protected resource metadata document so a client can discover how to get a token.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping

import orjson
from aiohttp import web

METADATA_PREFIX = "/.well-known/oauth-protected-resource"


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The bearer token in a request's ``Authorization`` header, or None when absent or another
    scheme."""
    header = headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def resource_metadata_url(base_url: str, resource_path: str) -> str:
    """``<base>/.well-known/oauth-protected-resource<resource path>`` (RFC 9728 section 3.1)."""
    return f"{base_url.rstrip('/')}{METADATA_PREFIX}{resource_path}"


def challenge(base_url: str, resource_path: str, *, token_presented: bool) -> str:
    """The ``WWW-Authenticate`` value for a 401 on ``resource_path``."""
    value = f'Bearer resource_metadata="{resource_metadata_url(base_url, resource_path)}"'
    if token_presented:
        value += ', error="invalid_token"'
    return value


_ERRORS: dict[int, Callable[..., web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    503: web.HTTPServiceUnavailable,
}


def json_error(status: int, error: str, message: str, **headers: str) -> web.HTTPException:
    """An HTTP error with a JSON body ``{"error", "message"}``, ready to raise."""
    text = orjson.dumps({"error": error, "message": message}).decode()
    if status == 413:
        return web.HTTPRequestEntityTooLarge(
            max_size=0, text=text, content_type="application/json", headers=headers
        )
    return _ERRORS[status](text=text, content_type="application/json", headers=headers)


def unauthorized(base_url: str, resource_path: str, *, token_presented: bool) -> web.HTTPException:
    message = "the bearer token is not valid" if token_presented else "a bearer token is required"
    return json_error(
        401,
        "invalid_token" if token_presented else "unauthorized",
        message,
        **{"WWW-Authenticate": challenge(base_url, resource_path, token_presented=token_presented)},
    )


class TokenDirectory:
    """Fixed tokens mapped to a value (a shim's server); tokens are held only as digests."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._by_digest = {_digest(token): value for token, value in tokens.items()}

    def lookup(self, token: str) -> str | None:
        digest = _digest(token)
        for known, value in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return value
        return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
