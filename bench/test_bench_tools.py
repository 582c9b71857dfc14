"""Checks of the benchmark tooling itself (not timed): `.venv/bin/python -m pytest bench -q`.

Rule: real parts (wrk against the bench's own upstream process); no assertions on speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiohttp import web

from bench import mcpclient
from bench.common import LOOPBACK, PYTHON, ROOT, Processes, free_port, processes
from bench.report import render
from bench.scenarios import target
from bench.scenarios.overhead import (
    REFERENCE,
    merged,
    reference_added,
    reference_ratio,
    reference_scale,
    round_added_p50,
    round_ratio,
    scaled_targets,
)
from bench.wrk import Load, run_wrk, token_lines


@pytest.fixture
def fast_upstream() -> Iterator[tuple[Processes, str, int]]:
    with processes("tooling-test") as stack:
        port = free_port()
        process = stack.start("upstream", [PYTHON, "-m", "bench.upstream", str(port)], cwd=ROOT)
        stack.wait_http(process, f"http://{LOOPBACK}:{port}/healthz")
        yield stack, f"http://{LOOPBACK}:{port}", process.pid


def test_wrk_posts_tools_call_with_session_headers(
    fast_upstream: tuple[Processes, str, int],
) -> None:
    _, base, pid = fast_upstream
    session = mcpclient.initialize(f"{base}/mcp", dict)
    assert "Mcp-Session-Id" in session.headers
    load = run_wrk(
        f"{base}/mcp",
        session.body("echo", {}),
        session.headers,
        connections=2,
        seconds=1,
        target_pids={"upstream": pid},
    )
    assert load.requests > 0
    assert load.non2xx == 0
    assert load.statuses == {}
    assert load.cpu_us_per_request["upstream"] > 0


def test_wrk_counts_error_statuses_and_hands_out_tokens(
    fast_upstream: tuple[Processes, str, int],
) -> None:
    _, base, pid = fast_upstream
    load = run_wrk(
        f"{base}/missing",
        b"{}",
        {"Content-Type": "application/json"},
        connections=1,
        seconds=1,
        target_pids={"upstream": pid},
        tokens=[{"X-Token": "one", "X-Secret": "1"}, {"X-Token": "two", "X-Secret": "2"}],
    )
    assert load.non2xx == load.requests > 0
    assert load.statuses == {"404": load.requests}
    assert load.ok_rps == 0


async def test_wrk_threads_send_their_own_token_rows_each_at_most_once() -> None:
    seen: list[tuple[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.headers["X-Token"], request.headers["X-Secret"]))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/mcp", record)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, LOOPBACK, port).start()
    rows = [
        {"X-Token": f"token-{n // 8}", "X-Secret": f"{n % 8}.secret-{n}"} for n in range(100_000)
    ]
    try:
        load = await asyncio.to_thread(
            run_wrk,
            f"http://{LOOPBACK}:{port}/mcp",
            b"{}",
            {"Content-Type": "application/json"},
            connections=2,
            seconds=1,
            target_pids={},
            tokens=rows,
        )
    finally:
        await runner.cleanup()
    assert load.non2xx == 0
    assert 2 < load.requests <= len(seen) <= load.requests + 2  # + those in flight at the end
    assert len(set(seen)) == len(seen), "a row was sent twice"
    assert set(seen) <= {(row["X-Token"], row["X-Secret"]) for row in rows}
    # thread 1's first row, and thread 0's second (wrk checks the first on start-up)
    assert {("token-0", "1.secret-1"), ("token-0", "2.secret-2")} <= set(seen)


def test_token_lines_leave_out_repeated_values_and_refuse_unsendable_ones() -> None:
    rows = [{"A": "t1", "B": "s1"}, {"A": "t1", "B": "s2"}, {"A": "t2", "B": "s2"}]
    assert token_lines(rows, ["A", "B"]) == "t1\ts1\n\ts2\nt2\t\n"
    for bad in ("", "two\tfields", "two\nlines"):
        with pytest.raises(ValueError, match="non-empty, one line"):
            token_lines([{"A": bad}], ["A"])


def test_targets_compare_in_the_stated_direction() -> None:
    assert target("ratio", 0.5, 0.3, at_least=True)["met"]
    assert not target("ratio", 0.2, 0.3, at_least=True)["met"]
    assert target("added", 0.8, 1.0, at_least=False, unit=" ms")["met"]
    assert not target("added", 1.2, 1.0, at_least=False)["met"]


def test_readme_tables_come_from_results() -> None:
    run = {"okRps": 10.0, "rps": 10.0, "p50Ms": 1.0, "p99Ms": 2.0, "non2xx": 3}
    document = {
        "scenario": "overhead",
        "file": "2026-01-01-overhead.json",
        "time": "2026-01-01T00:00:00+00:00",
        "machine": {"cores": 2, "cpu": "test cpu", "loadAverage": [1.0, 1.0, 1.0]},
        "upstreams": {"fast": {"direct": {"c1": run, "c16": run, "c64": run}}},
        "targets": [target("shim / direct, 16 clients", 0.2, 0.45, at_least=True)],
    }
    text = render({"overhead": document})
    assert "| overhead | shim / direct, 16 clients | 0.2 | >= 0.45 | **no** |" in text
    assert "| fast | direct |" in text
    assert "Not run yet." in text


def test_rounds_are_merged_and_compared_within_each_round() -> None:
    def load(rps: float, p50: float, cpu: float) -> Load:
        return Load(
            connections=1,
            rps=rps,
            p50_ms=p50,
            p90_ms=p50,
            p99_ms=p50,
            mean_ms=p50,
            requests=100,
            non2xx=1,
            socket_errors=0,
            wrk_cpu_percent=5.0,
            target_cpu_percent=90.0,
            cpu_us_per_request={"shim": cpu},
            statuses={"502": 1},
        )

    direct = merged([load(1000, 0.1, 80), load(500, 0.2, 90), load(1000, 0.1, 85)])
    shim = merged([load(400, 0.5, 500), load(300, 0.7, 600), load(450, 0.5, 550)])
    assert shim["rps"] == 400
    assert shim["p50Ms"] == 0.5
    assert shim["cpuUsPerRequest"] == {"shim": 550}
    assert (shim["requests"], shim["non2xx"], shim["errorStatuses"]) == (300, 3, {"502": 3})
    assert [r["rps"] for r in shim["rounds"]] == [396, 297, 445.5]  # 2xx answers only
    measured = {"direct": {"c1": direct}, "shim": {"c1": shim}}
    # per round 0.4, 0.6 and 0.45: the slow second round does not pull the ratio down
    assert round_ratio(measured, "shim", 1) == 0.45
    assert round(round_added_p50(measured, "shim", 1) or 0, 3) == 0.4
    assert round_ratio(measured, "gateway+shim", 1) is None


def test_the_reference_proxy_carries_a_session_and_its_calls(
    fast_upstream: tuple[Processes, str, int],
) -> None:
    stack, base, upstream_pid = fast_upstream
    port = free_port()
    proxy = stack.start(
        "reference", [PYTHON, "-m", "bench.reference_proxy", str(port), f"{base}/mcp"], cwd=ROOT
    )
    stack.wait_http(proxy, f"http://{LOOPBACK}:{port}/healthz")
    session = mcpclient.initialize(f"http://{LOOPBACK}:{port}/mcp", dict)
    assert "Mcp-Session-Id" in session.headers  # passed back from the upstream
    result = mcpclient.call_once(f"http://{LOOPBACK}:{port}/mcp", session, {}, "echo", {})
    assert result["content"] == [{"type": "text", "text": "ok"}]
    load = run_wrk(
        f"http://{LOOPBACK}:{port}/mcp",
        session.body("echo", {}),
        session.headers,
        connections=2,
        seconds=1,
        target_pids={"proxy": proxy.pid, "upstream": upstream_pid},
    )
    assert load.requests > 0
    assert load.non2xx == 0
    assert load.cpu_us_per_request["proxy"] > 0


def test_scaled_targets_compare_with_the_reference_within_each_round() -> None:
    def rounds(*pairs: tuple[float, float]) -> dict[str, object]:
        return {"rounds": [{"rps": rps, "p50Ms": p50} for rps, p50 in pairs]}

    measured = {
        "direct": {
            "c1": rounds((1, 0.1), (1, 0.2), (1, 0.1)),
            "c16": rounds((1000, 1), (800, 1), (1000, 1)),
        },
        REFERENCE: {
            "c1": rounds((1, 0.6), (1, 0.9), (1, 0.5)),
            "c16": rounds((250, 1), (200, 1), (240, 1)),
        },
        "shim": {
            "c1": rounds((1, 0.5), (1, 0.5), (1, 0.5)),
            "c16": rounds((300, 1), (260, 1), (250, 1)),
        },
    }
    # rates over the reference's per round: 1.2, 1.3, 1.04; added p50 0.4/0.5, 0.3/0.7, 0.4/0.4
    assert reference_ratio(measured, "shim") == 1.2
    assert round(reference_added(measured, "shim") or 0, 3) == 0.8
    assert reference_ratio(measured, "gateway+shim") is None
    found = {t["name"]: t for t in scaled_targets(measured)}
    assert found[f"shim / {REFERENCE}, 16 clients (scaled target)"]["goal"] == ">= 1.071"
    assert found[f"shim / {REFERENCE}, 16 clients (scaled target)"]["met"]
    assert found[f"p50 added by shim / by the {REFERENCE}, 1 client (scaled target)"]["met"]
    assert not any("gateway" in name for name in found)
    scale = reference_scale(measured)
    assert list(scale.values()) == [0.25, 0.5]
