"""RFC 8693 token exchange: the downstream token a server needs, per user, cached.

The subject token is the request's identity assertion (a JWT the gateway signed, type
`urn:ietf:params:oauth:token-type:jwt`); the shim authenticates to the token endpoint with its
own client credentials (HTTP Basic). Tokens are cached per (user, audience) until shortly before
they expire, and concurrent misses for one user share one exchange.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import orjson

from corral.shim.config import TokenExchangeConfig

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
EXPIRY_MARGIN_SECONDS = 30.0
DEFAULT_LIFETIME_SECONDS = 300.0


class TokenExchangeError(Exception):
    """The token endpoint did not issue a token; the message says what it answered."""


@dataclass(frozen=True)
class _Cached:
    token: str
    until: float


class TokenExchanger:
    """Obtains and caches downstream tokens for one server."""

    def __init__(self, config: TokenExchangeConfig, max_entries: int = 10_000) -> None:
        self._config = config
        self._client_id = config.client_id.read()
        self._client_secret = config.client_secret.read()
        self._cache: dict[str, _Cached] = {}
        self._inflight: dict[str, asyncio.Future[str]] = {}
        self._max = max_entries

    @property
    def header(self) -> str:
        return self._config.inject.header

    def header_value(self, token: str) -> str:
        return f"{self._config.inject.prefix}{token}"

    async def token_for(self, http: aiohttp.ClientSession, subject: str, assertion: str) -> str:
        """The user's downstream token: from the cache, or exchanged now."""
        cached = self._cache.get(subject)
        if cached is not None and cached.until > time.monotonic():
            return cached.token
        pending = self._inflight.get(subject)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inflight[subject] = future
        try:
            token, lifetime = await self._exchange(http, assertion)
            if len(self._cache) >= self._max:
                self._cache.clear()
            until = time.monotonic() + max(0.0, lifetime - EXPIRY_MARGIN_SECONDS)
            self._cache[subject] = _Cached(token, until)
            future.set_result(token)
            return token
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()
            raise
        finally:
            del self._inflight[subject]

    async def _exchange(self, http: aiohttp.ClientSession, assertion: str) -> tuple[str, float]:
        config = self._config
        form = {
            "grant_type": GRANT_TYPE,
            "subject_token": assertion,
            "subject_token_type": JWT_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
        }
        if config.audience:
            form["audience"] = config.audience
        if config.resource:
            form["resource"] = config.resource
        if config.scopes:
            form["scope"] = " ".join(config.scopes)
        auth = aiohttp.BasicAuth(self._client_id, self._client_secret)
        timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
        try:
            async with http.post(
                config.token_endpoint, data=form, auth=auth, timeout=timeout, allow_redirects=False
            ) as response:
                body = await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TokenExchangeError(f"the token endpoint is unreachable: {exc}") from None
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if response.status != 200 or not isinstance(answer, dict):
            detail = (
                answer.get("error")
                if isinstance(answer, dict)
                else body[:100].decode(errors="replace")
            )
            raise TokenExchangeError(f"the token endpoint answered {response.status}: {detail}")
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenExchangeError("the token endpoint answered without an access_token")
        lifetime = answer.get("expires_in")
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool):
            lifetime = DEFAULT_LIFETIME_SECONDS
        return token, float(lifetime)
