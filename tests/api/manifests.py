"""Manifests for the API tests: minimal valid objects and a table of invalid ones.

Each invalid case names the message the API server (and pydantic, for CEL rules) must give.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
API = "corral.dev/v1alpha1"


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    """(relative path, document) for every YAML document under examples/."""
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                found.append((str(path.relative_to(EXAMPLES)), doc))
    return found


def server(**spec: Any) -> dict[str, Any]:
    """An MCPServer named `bad` with `spec` (a container runtime unless spec sets its own)."""
    body: dict[str, Any] = {"runtime": {"container": {"image": "example/mcp:1"}}}
    body.update(spec)
    return {"apiVersion": API, "kind": "MCPServer", "metadata": {"name": "bad"}, "spec": body}


def remote(url: str = "https://mcp.example.com/mcp", **spec: Any) -> dict[str, Any]:
    """An MCPServer with a remote runtime."""
    return server(runtime={"remote": {"url": url}}, **spec)


def policy(**changes: Any) -> dict[str, Any]:
    """An AccessPolicy named `bad` with parts of its spec replaced."""
    spec: dict[str, Any] = {
        "subjects": [{"group": "eng"}],
        "targets": {"servers": ["s"]},
        "rules": [{"effect": "Allow", "methods": ["tools/call"], "tools": ["read_*"]}],
    }
    spec.update(changes)
    return {"apiVersion": API, "kind": "AccessPolicy", "metadata": {"name": "bad"}, "spec": spec}


def rule(**fields: Any) -> dict[str, Any]:
    """An AccessPolicy whose single rule is `fields` (effect Allow by default)."""
    return policy(rules=[{"effect": "Allow", **fields}])


def catalog(runtime: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """An MCPCatalogEntry named `bad`."""
    body: dict[str, Any] = {"title": "Bad", "runtime": runtime or {"npx": {"package": "x"}}}
    body.update(spec)
    return {"apiVersion": API, "kind": "MCPCatalogEntry", "metadata": {"name": "bad"}, "spec": body}


@dataclass(frozen=True)
class Invalid:
    """A manifest the API server must reject with `message` in its error.

    `cel` cases come from our `x-kubernetes-validations`: pydantic gives the same message. The
    others are plain schema keywords, reported in the API server's own words.
    """

    id: str
    manifest: dict[str, Any]
    message: str
    cel: bool = True


_RUNTIME_ONE = "runtime must set exactly one of container, stdio, npx, uvx or remote"
_ONE_OF = "set exactly one of catalogEntry or runtime"
_GLOB = "must be a glob"
_DURATION = "must be a number of seconds (0 or more) or a duration like"
_SUBJECT = "each subject must set exactly one of user, group, serviceAccount or claim"

INVALID: tuple[Invalid, ...] = (
    Invalid("server-neither-runtime-nor-catalog", server(runtime=None), _ONE_OF),
    Invalid("server-runtime-and-catalog", server(catalogEntry={"name": "github"}), _ONE_OF),
    Invalid(
        "runtime-two-members",
        server(runtime={"container": {"image": "a"}, "npx": {"package": "b"}}),
        _RUNTIME_ONE,
    ),
    Invalid("runtime-empty", server(runtime={}), _RUNTIME_ONE),
    Invalid(
        "replicas-per-user",
        server(tenancy="perUser", replicas=2),
        "replicas applies only to tenancy shared",
    ),
    Invalid(
        "remote-with-env",
        remote(env=[{"name": "A", "value": "1"}]),
        "a remote server has no container: env and files do not apply",
    ),
    Invalid(
        "remote-per-user",
        remote(tenancy="perUser"),
        "a remote server has no pods to run per user: use tenancy shared",
    ),
    Invalid(
        "remote-plain-http",
        remote(url="http://mcp.example.com/mcp"),
        "remote url must use https (plain http only with inCluster: true)",
    ),
    Invalid(
        "filter-plain-http",
        server(filters=[{"name": "f", "url": "http://filter.example.com/check"}]),
        "filter url must use https (plain http only with inCluster: true)",
    ),
    Invalid("tools-allow-space", server(tools={"allow": ["read file"]}), _GLOB),
    Invalid("tools-deny-brackets", server(tools={"deny": ["delete_[ab]"]}), _GLOB),
    Invalid("tools-deny-zero-width", server(tools={"deny": ["dele\u200bte_*"]}), _GLOB),
    Invalid("tools-ideographic-space", server(tools={"allow": ["read\u3000file"]}), _GLOB),
    Invalid(
        "env-value-and-value-from",
        server(
            env=[
                {
                    "name": "A",
                    "value": "1",
                    "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                }
            ]
        ),
        "env entries must set exactly one of value or valueFrom",
    ),
    Invalid(
        "value-from-two-refs",
        server(
            env=[
                {
                    "name": "A",
                    "valueFrom": {
                        "secretKeyRef": {"name": "s", "key": "k"},
                        "configMapKeyRef": {"name": "c", "key": "k"},
                    },
                }
            ]
        ),
        "valueFrom must set exactly one of secretKeyRef or configMapKeyRef",
    ),
    Invalid(
        "file-relative-path",
        server(files=[{"path": "etc/app.conf", "content": "x"}]),
        "files path must be absolute and must not contain '..'",
    ),
    Invalid(
        "file-dotdot-path",
        server(files=[{"path": "/etc/../root/x", "content": "x"}]),
        "files path must be absolute and must not contain '..'",
    ),
    Invalid(
        "file-without-content",
        server(files=[{"path": "/etc/app.conf"}]),
        "files entries must set exactly one of content or valueFrom",
    ),
    Invalid("idle-timeout-words", server(idleTimeout="ten minutes"), _DURATION),
    Invalid("idle-timeout-negative", server(idleTimeout=-5), _DURATION),
    Invalid(
        "token-exchange-http",
        server(
            tokenExchange={
                "tokenEndpoint": "http://login.example.com/token",
                "clientSecretRef": {"name": "te"},
            }
        ),
        "tokenExchange tokenEndpoint must use https",
    ),
    Invalid(
        "catalog-config-value-and-secret",
        server(
            runtime=None,
            catalogEntry={
                "name": "github",
                "config": [
                    {"name": "token", "value": "x", "secretKeyRef": {"name": "s", "key": "k"}}
                ],
            },
        ),
        "catalogEntry config entries must set exactly one of value or secretKeyRef",
    ),
    Invalid(
        "remote-header-value-and-secret",
        server(
            runtime={
                "remote": {
                    "url": "https://mcp.example.com/mcp",
                    "headers": [
                        {"name": "X-K", "value": "v", "secretKeyRef": {"name": "s", "key": "k"}}
                    ],
                }
            }
        ),
        "headers entries must set exactly one of value or secretKeyRef",
    ),
    Invalid("subject-two-kinds", policy(subjects=[{"user": "a", "group": "b"}]), _SUBJECT),
    Invalid("subject-empty", policy(subjects=[{}]), _SUBJECT),
    Invalid(
        "targets-empty",
        policy(targets={}),
        "targets must set at least one of servers, serverSelector or catalogEntries",
    ),
    Invalid(
        "rule-tools-without-tool-method",
        rule(methods=["resources/read"], tools=["a"]),
        "tools only applies to tools/* methods",
    ),
    Invalid(
        "rule-prompts-without-prompt-method",
        rule(methods=["tools/call"], prompts=["p"]),
        "prompts only applies to prompts/* methods",
    ),
    Invalid(
        "rule-resources-without-resource-method",
        rule(methods=["prompts/get"], resources=["file://*"]),
        "resources only applies to resources/* methods",
    ),
    Invalid("rule-glob-tab", rule(methods=["*"], tools=["read\tfile"]), _GLOB),
    Invalid(
        "selector-in-without-values",
        policy(targets={"serverSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
        "values must be non-empty for In and NotIn and empty for Exists and DoesNotExist",
    ),
    Invalid(
        "selector-exists-with-values",
        policy(
            targets={
                "serverSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                }
            }
        ),
        "values must be non-empty for In and NotIn and empty for Exists and DoesNotExist",
    ),
    Invalid(
        "catalog-secret-arg",
        catalog(config=[{"name": "token", "secret": True, "target": "arg"}]),
        "a secret config item cannot target arg",
    ),
    Invalid(
        "catalog-secret-default",
        catalog(config=[{"name": "token", "secret": True, "default": "x"}]),
        "a secret config item cannot have a default",
    ),
    Invalid(
        "catalog-header-not-remote",
        catalog(config=[{"name": "k", "target": "header"}]),
        "config target header applies only to a remote runtime",
    ),
    Invalid(
        "catalog-remote-env-config",
        catalog(
            runtime={"remote": {"url": "https://x.example.com/mcp"}},
            config=[{"name": "k", "target": "env"}],
        ),
        "a remote runtime has no process: config items must target header",
    ),
    Invalid("catalog-runtime-empty", catalog(runtime={"npx": None}), _RUNTIME_ONE),
    Invalid(
        "server-name-starts-with-digit",
        {**server(), "metadata": {"name": "1password"}},
        "name must start with a letter, use only lower case letters, digits and '-'",
    ),
    Invalid(
        "server-name-too-long",
        {**server(), "metadata": {"name": "a" * 51}},
        "and be at most 50 characters (it names a Service)",
    ),
    Invalid(
        "tenancy-unknown", server(tenancy="private"), 'Unsupported value: "private"', cel=False
    ),
    Invalid(
        "port-too-large",
        server(runtime={"container": {"image": "a", "port": 70000}}),
        "should be less than or equal to 65535",
        cel=False,
    ),
    Invalid(
        "effect-unknown",
        rule(effect="Maybe", methods=["*"]),
        'Unsupported value: "Maybe"',
        cel=False,
    ),
)


def without_none(value: Any) -> Any:
    """`value` with None-valued keys dropped (a None in a case means: leave the field out)."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return copy.deepcopy(value)
