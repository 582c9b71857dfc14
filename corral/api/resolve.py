"""The effective server: an MCPServer's spec merged with its catalog entry and the defaults.

Rule: pure. The operator, the gateway and `corral dev` all call `resolve_server`, so they agree on
what runs. Precedence, lowest first: built-in defaults, the entry's `defaults`, the entry's
`config` values (as given in `spec.catalogEntry.config`, else the item's default), the server's
own fields. Problems the API server cannot see (a missing entry, unknown or missing config, a
secret given as a literal) are returned for the ConfigValid condition, never raised.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from corral.api.catalog import CatalogDefaults, ConfigItem, MCPCatalogEntrySpec
from corral.api.common import EnvVar, FileSpec, ValueFrom, parse_duration
from corral.api.runtimes import HeaderValue, Runtime
from corral.api.servers import Audit, ConfigValue, MCPServerSpec, ResourceRequirements, ToolSubset

DEFAULT_TENANCY: Literal["shared"] = "shared"
DEFAULT_STARTUP_TIMEOUT = 120
DEFAULT_REPLICAS = 1
_ARG_MEMBERS = ("container", "stdio", "npx", "uvx")


@dataclass(frozen=True)
class EffectiveServer:
    """What actually runs: every default applied, config mapped, durations in seconds."""

    runtime: Runtime
    tenancy: Literal["shared", "perUser"]
    replicas: int
    idle_timeout: int
    startup_timeout: int
    env: tuple[EnvVar, ...]
    files: tuple[FileSpec, ...]
    tools: ToolSubset | None
    audit: Audit
    resources: ResourceRequirements | None


@dataclass(frozen=True)
class Resolution:
    """The effective server (None when it cannot be built) and every problem found."""

    server: EffectiveServer | None
    problems: tuple[str, ...] = field(default=())


def resolve_server(spec: MCPServerSpec, entry: MCPCatalogEntrySpec | None) -> Resolution:
    """Merge `spec` with `entry` (the MCPCatalogEntry named by spec.catalogEntry, if any)."""
    problems: list[str] = []
    if spec.runtime is not None:
        runtime, defaults, mapped = spec.runtime, CatalogDefaults(), _Mapped()
    else:
        ref = spec.catalog_entry
        name = ref.name if ref is not None else ""
        if entry is None:
            return Resolution(
                None,
                (f"catalog entry {name!r} not found in the namespace: create it or use runtime",),
            )
        defaults = entry.defaults or CatalogDefaults()
        mapped = _map_config(name, entry.config or (), ref.config or () if ref else (), problems)
        runtime = _with_config(entry.runtime, mapped)
    tenancy = spec.tenancy or defaults.tenancy or DEFAULT_TENANCY
    if tenancy == "perUser" and spec.replicas is not None:
        problems.append("replicas applies only to tenancy shared; the catalog entry sets perUser")
    server = EffectiveServer(
        runtime=runtime,
        tenancy=tenancy,
        replicas=DEFAULT_REPLICAS
        if tenancy == "perUser" or spec.replicas is None
        else spec.replicas,
        idle_timeout=_duration(spec.idle_timeout, defaults.idle_timeout, 0),
        startup_timeout=_duration(
            spec.startup_timeout, defaults.startup_timeout, DEFAULT_STARTUP_TIMEOUT
        ),
        env=_merge_env(defaults.env or (), mapped.env, spec.env or ()),
        files=(*mapped.files, *(spec.files or ())),
        tools=spec.tools or defaults.tools,
        audit=spec.audit or defaults.audit or Audit(),
        resources=spec.resources or defaults.resources,
    )
    return Resolution(server, tuple(problems))


def _duration(*values: int | str | None) -> int:
    return parse_duration(next(v for v in values if v is not None))


@dataclass
class _Mapped:
    env: list[EnvVar] = field(default_factory=list)
    files: list[FileSpec] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    headers: list[HeaderValue] = field(default_factory=list)


def _map_config(
    entry_name: str,
    items: Sequence[ConfigItem],
    given: Sequence[ConfigValue],
    problems: list[str],
) -> _Mapped:
    values = {v.name: v for v in given}
    known = {item.name for item in items}
    problems.extend(
        f"catalog entry {entry_name!r} has no config {name!r}; known: {', '.join(sorted(known))}"
        for name in sorted(set(values) - known)
    )
    mapped = _Mapped()
    for item in items:
        value = values.get(item.name)
        if value is None and item.default is not None:
            value = ConfigValue(name=item.name, value=item.default)
        if value is None:
            if item.required:
                problems.append(
                    f"config {item.name!r} is required by catalog entry {entry_name!r}: "
                    "set it in spec.catalogEntry.config"
                )
            continue
        if item.secret and value.value is not None:
            problems.append(f"config {item.name!r} is secret: give it with secretKeyRef, not value")
            continue
        _place(item, value, mapped, problems)
    return mapped


def _place(item: ConfigItem, value: ConfigValue, mapped: _Mapped, problems: list[str]) -> None:
    secret_ref = value.secret_key_ref
    value_from = ValueFrom(secret_key_ref=secret_ref) if secret_ref is not None else None
    if item.target == "env":
        mapped.env.append(
            EnvVar(name=item.key or item.name, value=value.value, value_from=value_from)
        )
    elif item.target == "file":
        path = item.key or f"/etc/corral/config/{item.name}"
        mapped.files.append(FileSpec(path=path, content=value.value, value_from=value_from))
    elif item.target == "header":
        mapped.headers.append(
            HeaderValue(name=item.key or item.name, value=value.value, secret_key_ref=secret_ref)
        )
    elif value.value is None:
        problems.append(f"config {item.name!r} targets an argument: give a literal value")
    else:
        template = item.key or f"--{item.name}={{value}}"
        mapped.args.append(template.replace("{value}", value.value))


def _with_config(runtime: Runtime, mapped: _Mapped) -> Runtime:
    if mapped.headers and runtime.remote is not None:
        remote = runtime.remote
        headers = [*(remote.headers or ()), *mapped.headers]
        return runtime.model_copy(update={"remote": remote.model_copy(update={"headers": headers})})
    if mapped.args:
        for member_name in _ARG_MEMBERS:
            member = getattr(runtime, member_name)
            if member is not None:
                args = [*(member.args or ()), *mapped.args]
                return runtime.model_copy(
                    update={member_name: member.model_copy(update={"args": args})}
                )
    return runtime


def _merge_env(*layers: Iterable[EnvVar]) -> tuple[EnvVar, ...]:
    merged: dict[str, EnvVar] = {}
    for layer in layers:
        for var in layer:
            merged.pop(var.name, None)
            merged[var.name] = var
    return tuple(merged.values())
