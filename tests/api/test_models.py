"""The resource models: wire format, defaults, strictness and helpers."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from corral.api.common import LabelSelector, parse_duration
from corral.api.kinds import KINDS
from corral.api.servers import MCPServer, MCPServerSpec
from tests.api.manifests import example_documents, server

MODELS = {kind.kind: kind.model for kind in KINDS}


@pytest.mark.parametrize(("path", "doc"), example_documents(), ids=lambda v: str(v)[:40])
def test_example_round_trips_through_the_model(path: str, doc: dict[str, Any]) -> None:
    model = MODELS[doc["kind"]].model_validate(doc)
    again = MODELS[doc["kind"]].model_validate(model.wire())
    assert again == model, path
    assert model.wire()["spec"].keys() >= doc["spec"].keys()


def test_wire_uses_camel_case_and_omits_unset_fields() -> None:
    spec = MCPServerSpec(runtime={"npx": {"package": "p"}}, idle_timeout="5m")  # type: ignore[arg-type]
    wire = MCPServer(spec=spec).wire()
    assert wire["spec"]["idleTimeout"] == "5m"
    assert "idle_timeout" not in wire["spec"]
    assert "replicas" not in wire["spec"]
    assert "tenancy" not in wire["spec"]
    assert wire["apiVersion"] == "corral.dev/v1alpha1"


def test_unknown_fields_are_refused_with_their_path() -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        MCPServer.model_validate(server(replica=2))
    assert "spec.replica" in str(raised.value)
    assert "Extra inputs are not permitted" in str(raised.value)


def test_metadata_keeps_fields_the_api_server_adds() -> None:
    doc = server()
    doc["metadata"] = {"name": "s", "resourceVersion": "12", "managedFields": []}
    model = MCPServer.model_validate(doc)
    assert model.wire()["metadata"]["resourceVersion"] == "12"


def test_runtime_kind_and_bridging() -> None:
    for doc_runtime, kind, bridged in [
        ({"container": {"image": "i"}}, "container", False),
        ({"stdio": {"image": "i", "command": ["c"]}}, "stdio", True),
        ({"npx": {"package": "p"}}, "npx", True),
        ({"uvx": {"package": "p"}}, "uvx", True),
        ({"remote": {"url": "https://x.example.com/mcp"}}, "remote", False),
    ]:
        runtime = MCPServer.model_validate(server(runtime=doc_runtime)).spec.runtime
        assert runtime is not None
        assert (runtime.kind, runtime.bridged) == (kind, bridged)


def test_container_defaults() -> None:
    runtime = MCPServer.model_validate(server()).spec.runtime
    assert runtime is not None
    assert runtime.container is not None
    assert (runtime.container.port, runtime.container.path) == (8080, "/mcp")
    assert runtime.container.transport == "streamable-http"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0), (90, 90), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("2h", 7200), ("1m5s", 65)],
)
def test_parse_duration(value: int | str, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [-1, "", "5", "1d", "m", "1h 5m", "5m1h"])
def test_parse_duration_refuses(value: int | str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
            {"a": "2"},
            True,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
            {"a": "1"},
            False,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
    ],
)
def test_label_selector(selector: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert LabelSelector.model_validate(selector).matches(labels) is expected


def test_models_are_immutable() -> None:
    model = MCPServer.model_validate(server())
    with pytest.raises(pydantic.ValidationError):
        model.spec.replicas = 3  # type: ignore[misc]
