"""Lean metrics: what /metrics shows is what prometheus_client's own types would show."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from corral.common.metrics import LeanCounter, LeanHistogram
from corral.gateway.metrics import GatewayMetrics


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_a_counter_counts_each_label_set_apart() -> None:
    registry = CollectorRegistry()
    counter = LeanCounter("things", "Things seen", ["kind", "outcome"], registry)
    for _ in range(3):
        counter.inc("a", "ok")
    counter.inc("b", "ok")
    assert _samples(registry, "things_total") == {
        (("kind", "a"), ("outcome", "ok")): 3,
        (("kind", "b"), ("outcome", "ok")): 1,
    }
    text = generate_latest(registry).decode()
    assert "# TYPE things_total counter" in text
    assert 'things_total{kind="a",outcome="ok"} 3.0' in text


@pytest.mark.parametrize("labels", [(), ("tools/call",)])
def test_a_histogram_exports_what_prometheus_client_does(labels: tuple[str, ...]) -> None:
    values = [0.0, 0.001, 0.005, 0.0051, 0.3, 0.75, 9.99, 10.0, 10.5, 1e6]
    lean_registry, reference_registry = CollectorRegistry(), CollectorRegistry()
    names = ["method"] if labels else []
    lean = LeanHistogram("waits_seconds", "Waits", names, lean_registry)
    reference = Histogram("waits_seconds", "Waits", names, registry=reference_registry)
    for value in values:
        lean.observe(value, *labels)
        (reference.labels(*labels) if labels else reference).observe(value)
    for suffix in ("_bucket", "_count", "_sum"):
        assert _samples(lean_registry, "waits_seconds" + suffix) == _samples(
            reference_registry, "waits_seconds" + suffix
        )
    assert _samples(lean_registry, "waits_seconds_count") == {
        tuple(zip(names, labels, strict=True)): len(values)
    }


def test_histogram_buckets_must_ascend() -> None:
    with pytest.raises(ValueError, match="ascending"):
        LeanHistogram("x", "x", [], CollectorRegistry(), buckets=(1.0, 0.5))


def test_gateway_methods_outside_the_mcp_routes_count_as_other() -> None:
    metrics = GatewayMetrics()
    metrics.count_mcp_request("POST", 200)
    metrics.count_mcp_request("PROPFIND", 405)
    metrics.count_mcp_request("PUT", 405)
    assert _samples(metrics.registry, "corral_gateway_mcp_requests_total") == {
        (("method", "POST"), ("status", "200")): 1,
        (("method", "other"), ("status", "405")): 2,
    }
