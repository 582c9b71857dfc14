"""The audit shipper's batching: full batches at once, the rest once per flush interval."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from corral.gateway.settings import GatewaySettings
from corral.shim.config import AuditSink
from corral.shim.metrics import ShimMetrics
from corral.shim.shipper import AuditShipper
from corral.store.pools import PoolSettings
from tests.fixtures.processes import LOOPBACK, free_port


class Ingest:
    """A real HTTP ingest endpoint that keeps each batch it receives, taking ``store_seconds``
    to answer (a database's commit time)."""

    store_seconds = 0.0

    def __init__(self) -> None:
        self.url = f"http://{LOOPBACK}:{free_port()}/ingest"
        self.batches: list[list[dict[str, Any]]] = []
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        events = orjson.loads(await request.read())["events"]
        await asyncio.sleep(self.store_seconds)
        self.batches.append(events)
        self.changed.set()
        return web.json_response({"stored": len(self.batches[-1])})

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for batch in self.batches for event in batch]

    async def wait_for(self, count: int, seconds: float) -> None:
        async with asyncio.timeout(seconds):
            while len(self.events) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def ingest() -> AsyncIterator[Ingest]:
    endpoint = Ingest()
    app = web.Application()
    app.router.add_post("/ingest", endpoint.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = int(endpoint.url.rsplit(":", 1)[1].split("/")[0])
    await web.TCPSite(runner, LOOPBACK, port).start()
    try:
        yield endpoint
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def shipping(
    ingest: Ingest, batch_size: int, flush_seconds: float
) -> AsyncIterator[AuditShipper]:
    """A started shipper to ``ingest``; stopped (delivering what is queued) on exit."""
    sink = AuditSink(
        kind="http", url=ingest.url, batch_size=batch_size, flush_interval_seconds=flush_seconds
    )
    async with aiohttp.ClientSession() as http:
        shipper = AuditShipper(sink, ShimMetrics(), http)
        shipper.start()
        try:
            yield shipper
        finally:
            async with asyncio.timeout(20):
                await shipper.stop()


async def test_a_full_batch_goes_out_without_waiting_for_the_interval(ingest: Ingest) -> None:
    async with shipping(ingest, batch_size=10, flush_seconds=3600) as shipper:
        for n in range(10):
            shipper.submit({"id": f"e{n}"})
        await ingest.wait_for(10, seconds=20)
    assert [len(batch) for batch in ingest.batches] == [10]


async def test_a_steady_trickle_goes_out_in_few_batches_and_every_event_once(
    ingest: Ingest,
) -> None:
    """Events arriving while a batch is in flight wait for the next interval (or a full batch)
    instead of each going out in a post of its own."""
    ingest.store_seconds = 0.02
    loop = asyncio.get_running_loop()
    async with shipping(ingest, batch_size=10_000, flush_seconds=0.25) as shipper:
        started = loop.time()
        for n in range(400):
            shipper.submit({"id": f"e{n}"})
            if n % 4 == 3:
                await asyncio.sleep(0.005)  # load pacing: about 800 events/s for 0.5 s
        intervals = (loop.time() - started) / 0.25
        await ingest.wait_for(400, seconds=20)
    assert [event["id"] for event in ingest.events] == [f"e{n}" for n in range(400)]
    # one batch per interval the trickle lasted, plus the one in flight when it ended
    assert len(ingest.batches) <= intervals + 2, [len(batch) for batch in ingest.batches]


async def test_stop_delivers_what_is_queued_at_once(ingest: Ingest) -> None:
    async with shipping(ingest, batch_size=1000, flush_seconds=3600) as shipper:
        for n in range(3):
            shipper.submit({"id": f"e{n}"})
    assert [event["id"] for event in ingest.events] == ["e0", "e1", "e2"]


def test_a_default_batch_is_one_the_gateway_takes_whole() -> None:
    """A full batch that the gateway refused as too many events would be split on every post."""
    gateway = GatewaySettings(database=PoolSettings(dsn="postgresql://x"), public_base_url="x")
    assert AuditSink(kind="http", url="http://x").batch_size <= gateway.max_ingest_events
