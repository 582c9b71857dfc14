"""Edge protections for the MCP routes, each a small pure check or a per-replica structure.

- ``valid_route``: the raw path must be exactly ``/mcp/{namespace}/{server}`` with
  Kubernetes-style names: no dot segments, no encoded slashes or dots, no empty segments, so a
  path trick can never reach another server.
- ``origin_allowed``: DNS-rebinding defence. An absent ``Origin`` (non-browser clients) passes;
  a present one must be the gateway's own origin or listed in ``allowedOrigins``.
- ``RateLimiter``: a token bucket per user. The limit is per replica: with N replicas behind a
  load balancer a user may reach up to N times the configured rate. It keeps no shared state
  on purpose (the hot path makes no network call); size ``ratePerSecond`` for one replica.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_RAW_ROUTE = re.compile(r"/mcp/([a-z0-9][-a-z0-9.]*)/([a-z0-9][-a-z0-9.]*)")


def valid_route(raw_path: str) -> tuple[str, str] | None:
    """``(namespace, server)`` when the undecoded path is a plain MCP route, else None."""
    path = raw_path.partition("?")[0]
    match = _RAW_ROUTE.fullmatch(path)
    if match is None:
        return None
    namespace, server = match.groups()
    for name in (namespace, server):
        if NAME.fullmatch(name) is None or ".." in name:
            return None
    return namespace, server


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased, as browsers send in ``Origin``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    if origin is None:
        return True
    return origin.lower().rstrip("/") in {origin_of(item) for item in allowed}


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key: ``rate`` tokens per second, at most ``burst`` saved up.

    Per replica (see the module docstring). At most ``max_keys`` buckets are kept; the least
    recently used is dropped first (a dropped bucket comes back full).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate limit needs ratePerSecond > 0 and burst >= 1")
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        """0 when a request may pass now, otherwise the seconds until one may."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self._rate
