"""Outbound address policy (SSRF protection) for URLs that users configure.

Refused unless a configured network allows them: private (RFC 1918, unique-local), shared
(100.64/10), loopback, link-local (which holds the cloud metadata address 169.254.169.254),
unspecified, multicast and reserved addresses, IPv4-mapped IPv6 forms of all of these included.
`check_url` refuses literal addresses when a URL is configured; `GuardedResolver` refuses names
that resolve only to refused addresses when a connection is made, so DNS cannot smuggle them in.
Callers do not follow redirects for such URLs.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedAddressError(OSError):
    """An outbound URL points at an address the egress policy refuses."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)

    def __str__(self) -> str:
        return str(self.strerror)


def is_public(address: Address) -> bool:
    """Whether an address is globally routable (not private, loopback, link-local, ...)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def address_allowed(address: Address, allowed: Sequence[Network]) -> bool:
    """Public addresses, and any address inside an explicitly allowed network."""
    if is_public(address):
        return True
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return any(
        address in network or (mapped is not None and mapped in network) for network in allowed
    )


def check_url(url: str, allowed: Sequence[Network]) -> None:
    """Refuse a URL that is not http(s) or names a refused literal address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedAddressError(f"{url!r} is not an http(s) URL with a host")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return
    if not address_allowed(address, allowed):
        raise RefusedAddressError(
            f"{url!r} points at {address}, a private/loopback/link-local address; allow its "
            "network in egress.allowedNetworks if this is intended"
        )


class GuardedResolver(AbstractResolver):
    """A resolver that drops refused addresses; fails when none are left."""

    def __init__(
        self,
        allowed: Callable[[], Sequence[Network]],
        inner: AbstractResolver | None = None,
    ) -> None:
        self._allowed = allowed
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = self._allowed()
        kept = [r for r in results if address_allowed(ipaddress.ip_address(r["host"]), allowed)]
        if not kept:
            refused = ", ".join(sorted({r["host"] for r in results}))
            raise RefusedAddressError(
                f"{host} resolves only to refused addresses ({refused}); allow the network in "
                "egress.allowedNetworks if this is intended"
            )
        return kept

    async def close(self) -> None:
        await self._inner.close()
