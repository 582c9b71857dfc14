"""The minimal fast MCP upstream: `python -m bench.upstream PORT`.

Rule: as little work per request as an MCP server can do, so that a proxy's overhead is visible.
Streamable HTTP in JSON mode: `initialize` answers with an `Mcp-Session-Id`, notifications get
202, `tools/list` lists one `echo` tool, `tools/call` answers with a fixed text; GET gets 405.
"""

from __future__ import annotations

import sys
import uuid

import orjson
import uvloop
from aiohttp import web

PROTOCOL = "2025-11-25"
TOOL = {
    "name": "echo",
    "description": "Answers ok.",
    "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}},
}


def result_for(method: str) -> dict[str, object]:
    if method == "initialize":
        return {
            "protocolVersion": PROTOCOL,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "bench-fast", "version": "1.0.0"},
        }
    if method == "tools/list":
        return {"tools": [TOOL]}
    if method == "tools/call":
        return {"content": [{"type": "text", "text": "ok"}], "isError": False}
    return {}


async def handle(request: web.Request) -> web.Response:
    message = orjson.loads(await request.read())
    if "id" not in message:
        return web.Response(status=202)
    method = message.get("method", "")
    reply = {"jsonrpc": "2.0", "id": message["id"], "result": result_for(method)}
    headers = {"Mcp-Session-Id": uuid.uuid4().hex} if method == "initialize" else {}
    return web.Response(body=orjson.dumps(reply), content_type="application/json", headers=headers)


async def not_allowed(_request: web.Request) -> web.Response:
    return web.Response(status=405)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({})


def main() -> None:
    app = web.Application()
    app.router.add_post("/mcp", handle)
    app.router.add_get("/mcp", not_allowed)
    app.router.add_delete("/mcp", healthz)
    app.router.add_get("/healthz", healthz)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
