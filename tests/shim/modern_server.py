"""A 2026-07-28 (stateless) MCP server written with the official Python SDK, for the shim tests.

Run: `python modern_server.py PORT`; serves streamable HTTP at /mcp on 127.0.0.1.
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("modern")


@server.tool()
def echo(message: str) -> str:
    """Echo the message back."""
    return f"Echo: {message}"


@server.tool()
def secret() -> str:
    """A tool policy keeps from most callers."""
    return "s3cret"


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
