"""One deadline per connection, kept by one timer.

Rule: ``set`` moves the deadline; the timer behind it is moved only when the new deadline comes
before it, and a timer that fires early re-arms itself for the deadline then set. A connection
busy with request after request thereby does not make and cancel a timer for each of them.
``expired`` runs once the deadline has passed and was not cleared or set again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    """A deadline that calls ``expired`` when it passes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[], None]) -> None:
        self._loop = loop
        self._expired = expired
        self._at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def set(self, seconds: float) -> None:
        """The deadline is ``seconds`` from now (whatever it was before)."""
        at = self._at = self._loop.time() + seconds
        timer = self._timer
        if timer is not None:
            if timer.when() <= at:
                return
            timer.cancel()
        self._timer = self._loop.call_at(at, self._fire)

    def clear(self) -> None:
        """No deadline until the next ``set`` (the timer, if any, fires and does nothing)."""
        self._at = None

    def cancel(self) -> None:
        """No deadline, and no timer: for a connection that is gone."""
        self._at = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        at = self._at
        if at is None:
            return
        if self._loop.time() < at:
            self._timer = self._loop.call_at(at, self._fire)
            return
        self._at = None
        self._expired()
