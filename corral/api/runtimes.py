"""How a server runs: exactly one of container, stdio, npx, uvx or remote.

Rule: the same union serves MCPServer.spec.runtime and MCPCatalogEntry.spec.runtime.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from corral.api.base import CelRule, CorralModel, count_set
from corral.api.common import KeyRef, ShortText

Image = Annotated[str, Field(min_length=1, max_length=512)]
Arg = Annotated[str, Field(max_length=4096)]
ArgList = Annotated[list[Arg], Field(max_length=128)]
PackageSpec = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\s]+$")]
HTTPS_OR_CLUSTER = (
    "self.url.startsWith('https://') || (self.inCluster && self.url.startsWith('http://'))"
)


def https_or_cluster(url: str, in_cluster: bool) -> bool:
    """A URL is https, or http when explicitly marked as in-cluster."""
    return url.startswith("https://") or (in_cluster and url.startswith("http://"))


Url = Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://[^\s/?#]+[^\s]*$")]


class ContainerRuntime(CorralModel):
    """An image that serves MCP over HTTP itself."""

    image: Image = Field(description="Container image of the MCP server.")
    command: ArgList | None = Field(default=None, description="Entrypoint override.")
    args: ArgList | None = Field(default=None, description="Arguments.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8080, description="Port the server listens on inside the pod."
    )
    path: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^/[^\s]*$")] = Field(
        default="/mcp", description="HTTP path of the MCP endpoint."
    )
    transport: Literal["streamable-http", "sse"] = Field(
        default="streamable-http", description="MCP transport the server speaks."
    )


class StdioRuntime(CorralModel):
    """An image whose command speaks MCP on stdin/stdout; `corral bridge` serves it over HTTP."""

    image: Image = Field(description="Container image holding the command.")
    command: Annotated[list[Arg], Field(min_length=1, max_length=128)] = Field(
        description="Command to run (the bridge starts it)."
    )
    args: ArgList | None = Field(default=None, description="Arguments.")


class NpxRuntime(CorralModel):
    """An npm package run with `npx` behind the bridge."""

    package: PackageSpec = Field(
        description="npm package spec, for example `@modelcontextprotocol/server-memory@2025.8.4`."
    )
    args: ArgList | None = Field(default=None, description="Arguments after the package.")
    image: Image | None = Field(
        default=None,
        description="Image with Node.js and the bridge; the operator's default if unset.",
    )


class UvxRuntime(CorralModel):
    """A PyPI package run with `uvx` behind the bridge."""

    package: PackageSpec = Field(
        description="PyPI package spec, for example `mcp-server-time==2025.9.25`."
    )
    args: ArgList | None = Field(default=None, description="Arguments after the package.")
    image: Image | None = Field(
        default=None, description="Image with uv and the bridge; the operator's default if unset."
    )


class HeaderValue(CorralModel):
    """A header sent to a remote server."""

    name: Annotated[
        str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    ] = Field(description="Header name.")
    value: ShortText | None = Field(default=None, description="A literal value.")
    secret_key_ref: KeyRef | None = Field(
        default=None, description="Take the value from a Secret key."
    )

    cel_rules = (
        CelRule(
            rule="has(self.value) != has(self.secretKeyRef)",
            message="headers entries must set exactly one of value or secretKeyRef",
            check=lambda h: count_set(h.value, h.secret_key_ref) == 1,
        ),
    )


class RemoteRuntime(CorralModel):
    """A server run elsewhere; the shim forwards to its URL (no server container)."""

    url: Url = Field(description="The server's MCP endpoint.")
    in_cluster: bool = Field(
        default=False, description="The URL is a cluster-internal Service: plain http is allowed."
    )
    headers: Annotated[list[HeaderValue], Field(max_length=32)] | None = Field(
        default=None, description="Headers added to every forwarded request."
    )

    cel_rules = (
        CelRule(
            rule=HTTPS_OR_CLUSTER,
            message="remote url must use https (plain http only with inCluster: true)",
            check=lambda r: https_or_cluster(r.url, r.in_cluster),
        ),
    )


class Runtime(CorralModel):
    """How the server runs: set exactly one member."""

    container: ContainerRuntime | None = Field(
        default=None, description="An image serving MCP over HTTP."
    )
    stdio: StdioRuntime | None = Field(default=None, description="An image with a stdio command.")
    npx: NpxRuntime | None = Field(default=None, description="An npm package (bridged).")
    uvx: UvxRuntime | None = Field(default=None, description="A PyPI package (bridged).")
    remote: RemoteRuntime | None = Field(default=None, description="A server reached by URL.")

    cel_rules = (
        CelRule(
            rule=(
                "(has(self.container) ? 1 : 0) + (has(self.stdio) ? 1 : 0) + "
                "(has(self.npx) ? 1 : 0) + (has(self.uvx) ? 1 : 0) + "
                "(has(self.remote) ? 1 : 0) == 1"
            ),
            message="runtime must set exactly one of container, stdio, npx, uvx or remote",
            check=lambda r: count_set(r.container, r.stdio, r.npx, r.uvx, r.remote) == 1,
        ),
    )

    @property
    def kind(self) -> str:
        """Which member is set."""
        for name in ("container", "stdio", "npx", "uvx", "remote"):
            if getattr(self, name) is not None:
                return name
        raise ValueError("runtime sets no member")

    @property
    def bridged(self) -> bool:
        """Whether the server speaks stdio and runs behind `corral bridge`."""
        return self.stdio is not None or self.npx is not None or self.uvx is not None
