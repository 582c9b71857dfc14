"""Audit delivery: events batched to the gateway's ingest endpoint (or stdout), never lost silently.

Batching: a batch goes out as soon as `batchSize` events are queued, and whatever is queued goes
out once per `flushIntervalSeconds`, so under steady load batches stay full and an event waits at
most about one interval.

Wire format: `POST {url}` with `Authorization: Bearer <token>` and body `{"events": [...]}`;
any 2xx is delivered. 413 and 400 split the batch until single events remain; a single event
refused can never be stored and is dropped, counted and logged with its id; anything else is
retried. A batch that cannot be delivered goes to the spool (files in `spoolDir`, or memory when
none is configured) and is retried, oldest first, before newer batches, so events arrive in
order and once each (every event has a unique `id` for idempotent ingest).
When the queue or the spool is full, events are dropped, counted and logged."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson

from corral.shim.config import AuditSink
from corral.shim.metrics import ShimMetrics

log = logging.getLogger(__name__)

MAX_QUEUE = 100_000
MAX_BACKOFF = 30.0


class Spool(Protocol):
    """Undelivered batches, oldest first, bounded in bytes."""

    def put(self, batch: bytes) -> bool: ...
    def oldest(self) -> tuple[object, bytes] | None: ...
    def remove(self, handle: object) -> None: ...
    def size(self) -> int: ...


class MemorySpool:
    """A spool in memory: survives an ingest outage, not a restart."""

    def __init__(self, max_bytes: int) -> None:
        self._batches: deque[bytes] = deque()
        self._bytes = 0
        self._max = max_bytes

    def put(self, batch: bytes) -> bool:
        if self._bytes + len(batch) > self._max:
            return False
        self._batches.append(batch)
        self._bytes += len(batch)
        return True

    def oldest(self) -> tuple[object, bytes] | None:
        return (self._batches[0], self._batches[0]) if self._batches else None

    def remove(self, handle: object) -> None:
        if self._batches and self._batches[0] is handle:
            self._bytes -= len(self._batches.popleft())

    def size(self) -> int:
        return self._bytes


class DiskSpool:
    """A spool of files, one per batch, named so that sorting gives arrival order."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._max = max_bytes
        self._counter = itertools.count()
        self._bytes = sum(path.stat().st_size for path in self._files())

    def _files(self) -> list[Path]:
        return sorted(self._dir.glob("batch-*.json"))

    def put(self, batch: bytes) -> bool:
        if self._bytes + len(batch) > self._max:
            return False
        name = f"batch-{time.time_ns():020d}-{next(self._counter):06d}.json"
        temporary = self._dir / f".{name}.tmp"
        with temporary.open("wb") as handle:
            handle.write(batch)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.rename(self._dir / name)
        self._bytes += len(batch)
        return True

    def oldest(self) -> tuple[object, bytes] | None:
        files = self._files()
        return (files[0], files[0].read_bytes()) if files else None

    def remove(self, handle: object) -> None:
        assert isinstance(handle, Path)
        size = handle.stat().st_size
        handle.unlink()
        self._bytes -= size

    def size(self) -> int:
        return self._bytes


class AuditShipper:
    """Accepts events without blocking and delivers them in batches in the background."""

    def __init__(
        self,
        config: AuditSink,
        metrics: ShimMetrics,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._http = http
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._token = config.token.read() if config.token is not None else None
        self._spool: Spool = (
            DiskSpool(config.spool_dir, config.spool_max_bytes)
            if config.spool_dir is not None
            else MemorySpool(config.spool_max_bytes)
        )

    def submit(self, event: dict[str, Any]) -> None:
        """Queue one event; when the queue is full the event is dropped and counted."""
        if len(self._queue) >= MAX_QUEUE:
            self._metrics.audit_dropped.inc()
            log.error("audit queue full (%d events): dropping event %s", MAX_QUEUE, event["id"])
            return
        self._queue.append(event)
        if len(self._queue) >= self._config.batch_size:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit shipper")

    async def stop(self) -> None:
        """Deliver (or spool) everything queued, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    def _take_batch(self) -> list[dict[str, Any]]:
        count = min(len(self._queue), self._config.batch_size)
        return [self._queue.popleft() for _ in range(count)]

    async def _run(self) -> None:
        """Send full batches as they fill and what is left once per flush interval, so a steady
        trickle of events goes out in batches (not one post per handful while a post is in
        flight) and no event waits much longer than the interval."""
        loop = asyncio.get_running_loop()
        interval = self._config.flush_interval_seconds
        backoff = 0.0
        due = loop.time() + interval
        while True:
            if not self._stopping:
                await self._wait(max(backoff, due - loop.time()))
            owed = 0  # events queued when the interval ran out: sent now, full batch or not
            if loop.time() >= due:
                owed = len(self._queue)
                due = loop.time() + interval
            delivered = await self._deliver_spool()
            while self._queue and (
                self._stopping
                or owed > 0
                or not delivered
                or len(self._queue) >= self._config.batch_size
            ):
                batch = self._take_batch()
                owed -= len(batch)
                if not delivered or not await self._send_events(batch):
                    delivered = False
                    self._to_spool(batch)
            backoff = 0.0 if delivered else min(MAX_BACKOFF, max(0.25, backoff * 2))
            if self._stopping:
                return

    async def _wait(self, seconds: float) -> None:
        """Until a batch fills (or `stop`), at most ``seconds``."""
        if seconds > 0 and not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _deliver_spool(self) -> bool:
        while (oldest := self._spool.oldest()) is not None:
            handle, body = oldest
            if not await self._deliver(orjson.loads(body)["events"]):
                return False
            self._spool.remove(handle)
            self._metrics.audit_spool_bytes.set(self._spool.size())
        return True

    async def _send_events(self, batch: list[dict[str, Any]]) -> bool:
        if self._config.kind == "stdout":
            sys.stdout.write("".join(orjson.dumps(e).decode() + "\n" for e in batch))
            sys.stdout.flush()
            self._metrics.audit_sent.inc(len(batch))
            return True
        return await self._deliver(batch)

    async def _deliver(self, batch: list[dict[str, Any]]) -> bool:
        """Post a batch; False means retry later. A batch the ingest refuses (too large, or
        invalid) is split in halves until single events remain; a single event refused can
        never be delivered and is dropped, counted and logged with its id."""
        outcome = await self._post(orjson.dumps({"events": batch}))
        if outcome == "ok":
            self._metrics.audit_sent.inc(len(batch))
            return True
        if outcome in ("too_large", "invalid") and len(batch) > 1:
            half = len(batch) // 2
            return await self._deliver(batch[:half]) and await self._deliver(batch[half:])
        if outcome in ("too_large", "invalid"):
            self._metrics.audit_dropped.inc(len(batch))
            log.error(
                "audit ingest refused %d events as %s; dropping ids %s",
                len(batch),
                outcome,
                ", ".join(str(event.get("id")) for event in batch),
            )
            return True
        return False

    def _to_spool(self, batch: list[dict[str, Any]]) -> None:
        if self._spool.put(orjson.dumps({"events": batch})):
            self._metrics.audit_spooled.inc(len(batch))
        else:
            self._metrics.audit_dropped.inc(len(batch))
            log.error(
                "audit spool full (%d bytes): dropping %d events", self._spool.size(), len(batch)
            )
        self._metrics.audit_spool_bytes.set(self._spool.size())

    async def _post(self, body: bytes) -> str:
        """`ok`, `too_large`, `invalid` (never deliverable) or `retry`."""
        assert self._http is not None
        assert self._config.url is not None
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        timeout = aiohttp.ClientTimeout(total=self._config.timeout_seconds)
        try:
            async with self._http.post(
                self._config.url, data=body, headers=headers, timeout=timeout
            ) as response:
                detail = (await response.read())[:500].decode(errors="replace")
                if 200 <= response.status < 300:
                    return "ok"
                log.warning("audit ingest answered %d: %s", response.status, detail)
                return {413: "too_large", 400: "invalid"}.get(response.status, "retry")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("audit ingest unreachable (%s); spooling and retrying", exc)
        return "retry"
