"""The yardstick the overhead targets are set against: `python -m bench.reference_proxy PORT URL`.

Rule: a bare one-hop aiohttp proxy that checks nothing (aiohttp's server, one pooled aiohttp
client session, the MCP headers passed on both ways, bodies read whole), as the issues' "for
scale" sentences describe it: on the machine the targets were set on it kept about 0.42x of
direct at 16 clients and added about 0.35 ms at one. Measured in the same rounds as the other
paths, it says how this machine, at this moment, compares with that scale.
"""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web

REQUEST_HEADERS = ("Content-Type", "Accept", "Mcp-Session-Id", "Mcp-Protocol-Version")
RESPONSE_HEADERS = ("Content-Type", "Mcp-Session-Id")


def application(upstream: str) -> web.Application:
    app = web.Application()

    async def start(app: web.Application) -> None:
        app["client"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))

    async def stop(app: web.Application) -> None:
        await app["client"].close()

    async def forward(request: web.Request) -> web.Response:
        headers = {
            name: request.headers[name] for name in REQUEST_HEADERS if name in request.headers
        }
        body = await request.read()
        async with app["client"].post(upstream, data=body, headers=headers) as answer:
            payload = await answer.read()
            passed = {
                name: answer.headers[name] for name in RESPONSE_HEADERS if name in answer.headers
            }
            return web.Response(status=answer.status, body=payload, headers=passed)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({})

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/mcp", forward)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    uvloop.install()
    web.run_app(
        application(sys.argv[2]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
