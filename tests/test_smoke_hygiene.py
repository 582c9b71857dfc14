"""The hygiene plugin fails a test that leaks an asyncio task, and only such a test."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

SAMPLE_TESTS = """
import asyncio
import contextlib


async def test_leaks_a_task():
    asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="forgotten-waiter")


async def test_awaits_its_task():
    task = asyncio.create_task(asyncio.Event().wait())
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_cancels_without_awaiting():
    asyncio.create_task(asyncio.Event().wait()).cancel()


def test_sync():
    assert True
"""


def test_a_leaked_task_fails_that_test_only_and_is_cancelled(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        f"""
        [pytest]
        pythonpath = {REPO_ROOT}
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = function
        filterwarnings = error
        """
    )
    pytester.makeconftest('pytest_plugins = ["tests.fixtures.hygiene"]')
    pytester.makepyfile(test_sample=SAMPLE_TESTS)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")

    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks_a_task*",
            "*leaked 1 asyncio task(s)*",
            "*forgotten-waiter*",
        ]
    )
    output = result.stdout.str() + result.stderr.str()
    assert "Task was destroyed but it is pending" not in output
