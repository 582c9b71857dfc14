"""What an MCP request acts on: the tool, resource or prompt a method names, and list results.

Rule: pure functions over parsed messages. Names are compared exactly; `valid_name` refuses the
characters the MCP specification does not allow in tool and prompt names, so look-alike Unicode
names cannot slip past a policy written in ASCII.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

from corral.mcp.jsonrpc import Message


class TargetKind(enum.Enum):
    """The kind of object a method acts on."""

    TOOL = "tool"
    RESOURCE = "resource"
    PROMPT = "prompt"


NAMED_METHODS: Mapping[str, tuple[TargetKind, str]] = {
    "tools/call": (TargetKind.TOOL, "name"),
    "prompts/get": (TargetKind.PROMPT, "name"),
    "resources/read": (TargetKind.RESOURCE, "uri"),
    "resources/subscribe": (TargetKind.RESOURCE, "uri"),
    "resources/unsubscribe": (TargetKind.RESOURCE, "uri"),
}
"""Methods whose params name their target, and the param that does."""

HEADER_NAMED_METHODS: Mapping[str, str] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
}
"""Methods whose target must be repeated in the `Mcp-Name` header (2026-07-28)."""

LIST_METHODS: Mapping[str, tuple[TargetKind, str, str]] = {
    "tools/list": (TargetKind.TOOL, "tools", "name"),
    "prompts/list": (TargetKind.PROMPT, "prompts", "name"),
    "resources/list": (TargetKind.RESOURCE, "resources", "uri"),
    "resources/templates/list": (TargetKind.RESOURCE, "resourceTemplates", "uriTemplate"),
}
"""List methods: the kind listed, the result key holding the items, the item's name key."""

_NAME_PATTERN = re.compile(r"[A-Za-z0-9_\-./]{1,128}")


def valid_name(name: str) -> bool:
    """True when a tool or prompt name uses only the characters the specification allows."""
    return _NAME_PATTERN.fullmatch(name) is not None


def target_of(message: Message) -> tuple[TargetKind, str] | None:
    """The (kind, name) a request acts on, or None when the method names nothing."""
    if message.method is None:
        return None
    params = message.params
    if message.method == "completion/complete":
        ref = params.get("ref")
        if not isinstance(ref, dict):
            return None
        if ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
            return TargetKind.PROMPT, ref["name"]
        if ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
            return TargetKind.RESOURCE, ref["uri"]
        return None
    named = NAMED_METHODS.get(message.method)
    if named is None:
        return None
    kind, key = named
    value = params.get(key)
    return (kind, value) if isinstance(value, str) else None


def arguments_of(message: Message) -> Mapping[str, Any]:
    """The arguments a request passes to its target (empty when it passes none)."""
    args = message.params.get("arguments")
    return args if isinstance(args, dict) else {}


def list_items(method: str, result: Any) -> tuple[TargetKind, str, list[Any]] | None:
    """For a list method's result: (kind, name key, items) or None when it is not one."""
    listed = LIST_METHODS.get(method)
    if listed is None or not isinstance(result, dict):
        return None
    kind, items_key, name_key = listed
    items = result.get(items_key)
    if not isinstance(items, list):
        return None
    return kind, name_key, items


def filter_list_result(
    method: str, result: Any, keep: Any
) -> tuple[dict[str, Any], list[str]] | None:
    """A list result with only the items `keep(kind, name)` accepts, and the names dropped.

    The result is a new dict (a filtered list is per caller, so callers may mark it private)."""
    found = list_items(method, result)
    if found is None:
        return None
    kind, name_key, items = found
    _, items_key, _ = LIST_METHODS[method]
    kept: list[Any] = []
    dropped: list[str] = []
    for item in items:
        name = item.get(name_key) if isinstance(item, dict) else None
        if isinstance(name, str) and keep(kind, name):
            kept.append(item)
        else:
            dropped.append(str(name))
    return {**result, items_key: kept}, dropped
