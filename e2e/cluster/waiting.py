"""Waiting on conditions: poll a predicate until it holds or a deadline passes.

Rule: this is the only way the control plane's code and tests wait; there are no fixed sleeps used
as synchronisation, only a short pause between two checks of a condition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

POLL_INTERVAL = 0.2

T = TypeVar("T")


class WaitTimeoutError(TimeoutError):
    """A condition did not hold before its deadline; the message names the condition."""


def wait_for(
    what: str,
    condition: Callable[[], T],
    timeout: float,
    *,
    interval: float = POLL_INTERVAL,
) -> T:
    """Returns the first truthy value of `condition()`, or raises after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
