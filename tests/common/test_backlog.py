"""Bookkeeping held back from the answer (corral.common.backlog): it runs in order, once, at the
next wait or after its delay at the latest, and one failure does not lose the rest."""

from __future__ import annotations

import asyncio

import pytest

from corral.common.backlog import Backlog

WAIT = 5.0


async def test_queued_work_runs_in_order_once_at_the_next_run() -> None:
    backlog = Backlog(delay=60)
    done: list[int] = []
    for n in range(3):
        backlog.add(lambda n=n: done.append(n))
    assert done == []
    assert len(backlog) == 3
    backlog.run()
    assert done == [0, 1, 2]
    assert len(backlog) == 0
    backlog.run()
    assert done == [0, 1, 2]


async def test_queued_work_runs_by_itself_after_the_delay() -> None:
    backlog = Backlog(delay=0.02)
    ran = asyncio.Event()
    backlog.add(ran.set)
    assert not ran.is_set()
    await asyncio.wait_for(ran.wait(), WAIT)
    assert len(backlog) == 0


async def test_the_timer_after_a_run_runs_nothing_twice() -> None:
    backlog = Backlog(delay=0.02)
    done: list[str] = []
    backlog.add(lambda: done.append("first"))
    backlog.run()
    later = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, later.set)
    await asyncio.wait_for(later.wait(), WAIT)
    assert done == ["first"]  # the timer found nothing left to run


async def test_a_failure_is_logged_and_the_rest_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backlog = Backlog(delay=60)
    done: list[str] = []

    def broken() -> None:
        raise RuntimeError("serializer broke")

    backlog.add(broken)
    backlog.add(lambda: done.append("after"))
    backlog.run()
    assert done == ["after"]
    failures = [
        r for r in caplog.records if r.exc_info and "serializer broke" in str(r.exc_info[1])
    ]
    assert len(failures) == 1


def test_the_delay_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Backlog(delay=0)
