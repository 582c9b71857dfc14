"""The shim's metrics keep a bounded set of method labels: methods are chosen by clients."""

from __future__ import annotations

from corral.shim.metrics import MAX_METHODS, ShimMetrics


def _series(metrics: ShimMetrics, name: str) -> dict[tuple[str, ...], float]:
    found: dict[tuple[str, ...], float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value  # type: ignore[arg-type]
    return found


def test_counts_land_on_their_method_and_status() -> None:
    metrics = ShimMetrics()
    for _ in range(3):
        metrics.message("tools/call", "ok")
    metrics.message("tools/call", "denied")
    metrics.denied("tools/call")
    metrics.answered("tools/call", 0.01)
    series = _series(metrics, "corral_shim_messages_total")
    assert series[(("method", "tools/call"), ("status", "ok"))] == 3
    assert series[(("method", "tools/call"), ("status", "denied"))] == 1
    assert _series(metrics, "corral_shim_denials_total") == {(("method", "tools/call"),): 1}
    assert _series(metrics, "corral_shim_request_seconds_count") == {(("method", "tools/call"),): 1}


def test_methods_beyond_the_bound_count_as_other() -> None:
    metrics = ShimMetrics()
    for index in range(MAX_METHODS + 100):
        metrics.message(f"made/up/{index}", "refused")
    series = _series(metrics, "corral_shim_messages_total")
    assert len(series) == MAX_METHODS + 1
    assert series[(("method", "other"), ("status", "refused"))] == 100
    assert sum(series.values()) == MAX_METHODS + 100
