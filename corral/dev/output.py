"""What `corral dev` prints: the server table and ready-to-paste client configurations.

Rule: pure functions from data to text; the runtime decides when to print.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

CURL_INITIALIZE = (
    '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
    '"capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}'
)


@dataclass(frozen=True)
class Row:
    """One server as the table shows it."""

    route: str
    runtime: str
    state: str
    tools: int | None
    url: str


def server_url(base_url: str, namespace: str, name: str) -> str:
    return f"{base_url.rstrip('/')}/mcp/{namespace}/{name}"


def table(rows: Sequence[Row]) -> str:
    """The servers as an aligned text table."""
    header = ("SERVER", "RUNTIME", "STATE", "TOOLS", "URL")
    body = [
        (r.route, r.runtime, r.state, "-" if r.tools is None else str(r.tools), r.url)
        for r in sorted(rows, key=lambda r: r.route)
    ]
    if not body:
        return "no MCPServer manifests yet: add one and it starts here"
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
        for line in (header, *body)
    ]
    return "\n".join(line.rstrip() for line in lines)


def client_configs(rows: Sequence[Row], key: str) -> str:
    """VS Code ``mcp.json``, Claude Desktop and a curl line for the servers in ``rows``."""
    ordered = sorted(rows, key=lambda r: r.route)
    auth = f"Bearer {key}"
    vscode = {
        "servers": {
            _name(r): {"type": "http", "url": r.url, "headers": {"Authorization": auth}}
            for r in ordered
        }
    }
    claude = {
        "mcpServers": {
            _name(r): {
                "command": "npx",
                "args": ["-y", "mcp-remote", r.url, "--header", f"Authorization:{auth}"],
            }
            for r in ordered
        }
    }
    parts = [
        "VS Code (.vscode/mcp.json):",
        json.dumps(vscode, indent=2),
        "",
        "Claude Desktop (claude_desktop_config.json):",
        json.dumps(claude, indent=2),
    ]
    if ordered:
        parts += ["", "curl:", curl_line(ordered[0].url, key)]
    return "\n".join(parts)


def curl_line(url: str, key: str) -> str:
    """A curl command that initializes an MCP session through the gateway."""
    words = [
        "curl", "-sS", url,
        "-H", f"Authorization: Bearer {key}",
        "-H", "Content-Type: application/json",
        "-H", "Accept: application/json, text/event-stream",
        "-d", CURL_INITIALIZE,
    ]  # fmt: skip
    return shlex.join(words)


def _name(row: Row) -> str:
    namespace, _, name = row.route.partition("/")
    return name if namespace == "default" else f"{namespace}-{name}"
