"""Bookkeeping that need not delay an answer, done when the process would otherwise wait.

A proxy answers a call and then has bookkeeping left (an audit event to serialize and queue,
metrics to count). Done right after the answer, it sits in front of the next call when calls come
one after another. A ``Backlog`` holds it instead and runs it while the process waits for an
upstream's answer (pass ``run`` as the lean client's ``while_waiting``), so it overlaps with the
upstream's own work. Whatever is queued also runs at the latest ``delay`` seconds after it was
queued, and at once when someone needs it done (``run``: before exposing metrics, at shutdown).

Rule: queue only work whose effects no caller waits for; values that depend on when the answer
went out (latency, status) are taken before queueing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

DEFAULT_DELAY = 0.01

log = logging.getLogger(__name__)


class Backlog:
    """Queued bookkeeping; ``run`` does all of it now."""

    def __init__(self, delay: float = DEFAULT_DELAY) -> None:
        if delay <= 0:
            raise ValueError("the backlog's delay must be positive")
        self._delay = delay
        self._work: list[Callable[[], None]] = []
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._work)

    def add(self, work: Callable[[], None]) -> None:
        """Queue ``work``; it runs at the next ``run`` or after ``delay`` seconds at the latest.
        One timer serves everything queued while it is pending (not one per call)."""
        self._work.append(work)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.run()

    def run(self) -> None:
        """Run everything queued, in order; a failure is logged and the rest still runs."""
        if not self._work:
            return
        work, self._work = self._work, []
        for item in work:
            try:
                item()
            except Exception:
                log.exception("bookkeeping after an answer failed")
