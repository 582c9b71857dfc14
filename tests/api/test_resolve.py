"""resolve_server: catalog defaults, config mapping and built-in defaults, with problems."""

from __future__ import annotations

from typing import Any

import yaml

from corral.api.catalog import MCPCatalogEntry, MCPCatalogEntrySpec
from corral.api.resolve import resolve_server
from corral.api.servers import MCPServer, MCPServerSpec
from tests.api.manifests import EXAMPLES, catalog, server


def _entry(name: str) -> MCPCatalogEntrySpec:
    doc = yaml.safe_load((EXAMPLES / "catalog" / f"{name}.yaml").read_text())
    return MCPCatalogEntry.model_validate(doc).spec


def _spec(doc: dict[str, Any]) -> MCPServerSpec:
    return MCPServer.model_validate(doc).spec


def _from_catalog(name: str, *config: dict[str, Any], **spec: Any) -> MCPServerSpec:
    ref = {"name": name, "config": list(config)} if config else {"name": name}
    return _spec(server(runtime=None, catalogEntry=ref, **spec))


def test_inline_runtime_gets_builtin_defaults() -> None:
    resolution = resolve_server(_spec(server()), None)
    assert resolution.problems == ()
    effective = resolution.server
    assert effective is not None
    assert (effective.tenancy, effective.replicas) == ("shared", 1)
    assert (effective.idle_timeout, effective.startup_timeout) == (0, 120)
    assert effective.audit.payloads == "metadata"


def test_server_fields_are_used() -> None:
    spec = _spec(server(replicas=3, idleTimeout="15m", startupTimeout=30))
    effective = resolve_server(spec, None).server
    assert effective is not None
    assert (effective.replicas, effective.idle_timeout, effective.startup_timeout) == (3, 900, 30)


def test_catalog_entry_defaults_and_config() -> None:
    token = {"name": "token", "secretKeyRef": {"name": "gh", "key": "token"}}
    spec = _from_catalog("github", token, env=[{"name": "GITHUB_TOOLSETS", "value": "repos"}])
    resolution = resolve_server(spec, _entry("github"))
    assert resolution.problems == ()
    effective = resolution.server
    assert effective is not None
    assert effective.runtime.stdio is not None
    assert effective.tenancy == "perUser"
    assert effective.idle_timeout == 1800
    assert effective.tools is not None
    assert effective.tools.deny == ["delete_*"]
    env = {var.name: var for var in effective.env}
    secret = env["GITHUB_PERSONAL_ACCESS_TOKEN"].value_from
    assert secret is not None
    assert secret.secret_key_ref is not None
    assert secret.secret_key_ref.name == "gh"
    assert env["GITHUB_TOOLSETS"].value == "repos", "the server's own env wins over config"


def test_server_overrides_catalog_tenancy() -> None:
    token = {"name": "token", "secretKeyRef": {"name": "gh", "key": "token"}}
    effective = resolve_server(
        _from_catalog("github", token, tenancy="shared", replicas=2), _entry("github")
    ).server
    assert effective is not None
    assert (effective.tenancy, effective.replicas) == ("shared", 2)


def test_replicas_with_a_per_user_catalog_default_is_a_problem() -> None:
    token = {"name": "token", "secretKeyRef": {"name": "gh", "key": "token"}}
    resolution = resolve_server(_from_catalog("github", token, replicas=2), _entry("github"))
    assert resolution.problems == (
        "replicas applies only to tenancy shared; the catalog entry sets perUser",
    )


def test_config_problems() -> None:
    resolution = resolve_server(
        _from_catalog(
            "github", {"name": "token", "value": "ghp_x"}, {"name": "nope", "value": "1"}
        ),
        _entry("github"),
    )
    assert resolution.problems == (
        "catalog entry 'github' has no config 'nope'; known: token, toolsets",
        "config 'token' is secret: give it with secretKeyRef, not value",
    )
    missing = resolve_server(_from_catalog("github"), _entry("github"))
    assert missing.problems == (
        "config 'token' is required by catalog entry 'github': set it in spec.catalogEntry.config",
    )


def test_argument_and_header_config() -> None:
    fetch = resolve_server(_from_catalog("fetch"), _entry("fetch")).server
    assert fetch is not None
    assert fetch.runtime.uvx is not None
    assert fetch.runtime.uvx.args == ["--user-agent=Corral/1.0"]
    key = {"name": "api-key", "secretKeyRef": {"name": "w", "key": "k"}}
    weather = resolve_server(_from_catalog("weather", key), _entry("weather")).server
    assert weather is not None
    assert weather.runtime.remote is not None
    headers = weather.runtime.remote.headers or []
    assert [(h.name, h.secret_key_ref is not None) for h in headers] == [("X-Api-Key", True)]


def test_file_config_and_missing_entry() -> None:
    entry = MCPCatalogEntry.model_validate(
        catalog(config=[{"name": "settings", "target": "file", "default": "a=1"}])
    ).spec
    effective = resolve_server(_from_catalog("bad"), entry).server
    assert effective is not None
    assert [(f.path, f.content) for f in effective.files] == [
        ("/etc/corral/config/settings", "a=1")
    ]
    gone = resolve_server(_from_catalog("github"), None)
    assert gone.server is None
    assert gone.problems == (
        "catalog entry 'github' not found in the namespace: create it or use runtime",
    )
