"""Webhook filters: external services that allow, deny or (with `mutate: true`) replace messages.

Wire format (documented in docs/shim.md): `POST {url}` with JSON body
`{"phase", "server", "user", "method", "tool", "message"}` and header
`Corral-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`. Receivers
check the signature and refuse stale timestamps (`verify_signature`), which defeats replays.
The answer is `{"allow": true}`, `{"allow": false, "reason": "..."}`, or with `mutate: true`
`{"allow": true, "message": {...}}`. A replacement may not change a request's id, method or
target (authorization already decided on those). On timeout or error, `failurePolicy: Fail`
(the default) denies and `Ignore` lets the message through; both are recorded as verdicts.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import orjson

from corral.api.policy import GlobSet
from corral.mcp.jsonrpc import ProtocolError, classify
from corral.mcp.targets import target_of
from corral.shim.config import FilterConfig
from corral.shim.metrics import ShimMetrics

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Corral-Signature"
Phase = Literal["request", "response"]


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for a body sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance: int = 300, now: float | None = None
) -> bool:
    """For receivers: whether `header` signs `body` with `secret` within `tolerance` seconds."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass(frozen=True)
class FilterVerdict:
    """What one filter said about one message (recorded in the audit event)."""

    filter: str
    phase: Phase
    outcome: Literal["allow", "deny", "mutate", "error"]
    reason: str | None = None
    latency_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "filter": self.filter,
            "phase": self.phase,
            "outcome": self.outcome,
            "latencyMs": self.latency_ms,
        }
        if self.reason is not None:
            data["reason"] = self.reason
        return data


@dataclass
class FilterOutcome:
    """The chain's result: allowed or not, the (possibly replaced) message, every verdict."""

    allowed: bool
    message: dict[str, Any]
    verdicts: list[FilterVerdict]
    reason: str | None = None


class _FilterFailedError(Exception):
    pass


class WebhookFilter:
    """One configured filter."""

    def __init__(self, config: FilterConfig) -> None:
        self.config = config
        self.name = config.name
        self._secret = config.secret.read()
        self._methods = frozenset(config.methods)
        self._tools = GlobSet.compile(config.tools, for_deny=False) if config.tools else None

    def applies(self, phase: Phase, method: str, tool: str | None) -> bool:
        if self.config.phase not in (phase, "both"):
            return False
        if "*" not in self._methods and method not in self._methods:
            return False
        return self._tools is None or (tool is not None and self._tools.matches(tool))

    async def call(
        self, http: aiohttp.ClientSession, envelope: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = orjson.dumps(envelope)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body, int(time.time())),
        }
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_seconds)
        try:
            async with http.post(
                self.config.url,
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    raise _FilterFailedError(f"answered HTTP {response.status}")
                answer = orjson.loads(await response.read())
        except TimeoutError:
            raise _FilterFailedError(f"timed out after {self.config.timeout_seconds:g}s") from None
        except (aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
            raise _FilterFailedError(f"failed: {exc}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
            raise _FilterFailedError('answered without a boolean "allow"')
        return answer


class FilterChain:
    """The configured filters, run in order; the first denial stops the chain."""

    def __init__(self, configs: Sequence[FilterConfig], metrics: ShimMetrics) -> None:
        self._filters = [WebhookFilter(config) for config in configs]
        self._metrics = metrics

    def __bool__(self) -> bool:
        return bool(self._filters)

    def selects(self, phase: Phase, method: str, tool: str | None) -> bool:
        filters = self._filters
        return bool(filters) and any(f.applies(phase, method, tool) for f in filters)

    async def run(
        self,
        http: aiohttp.ClientSession,
        phase: Phase,
        method: str,
        tool: str | None,
        message: dict[str, Any],
        context: Mapping[str, Any],
    ) -> FilterOutcome:
        outcome = FilterOutcome(True, message, [])
        for webhook in self._filters:
            if not webhook.applies(phase, method, tool):
                continue
            started = time.monotonic()
            envelope = {**context, "phase": phase, "method": method, "tool": tool}
            envelope["message"] = outcome.message
            verdict, replacement = await self._one(http, webhook, phase, envelope, started)
            outcome.verdicts.append(verdict)
            self._metrics.filter_calls.labels(webhook.name, verdict.outcome).inc()
            if replacement is not None:
                outcome.message = replacement
            if verdict.outcome == "deny" or (
                verdict.outcome == "error" and webhook.config.failure_policy == "Fail"
            ):
                outcome.allowed = False
                outcome.reason = f"filter {webhook.name!r}: {verdict.reason}"
                break
        return outcome

    async def _one(
        self,
        http: aiohttp.ClientSession,
        webhook: WebhookFilter,
        phase: Phase,
        envelope: dict[str, Any],
        started: float,
    ) -> tuple[FilterVerdict, dict[str, Any] | None]:
        def verdict(outcome: Any, reason: str | None = None) -> FilterVerdict:
            latency = round((time.monotonic() - started) * 1000, 3)
            return FilterVerdict(webhook.name, phase, outcome, reason, latency)

        try:
            answer = await webhook.call(http, envelope)
        except _FilterFailedError as exc:
            log.warning(
                "filter %s %s (failurePolicy %s)", webhook.name, exc, webhook.config.failure_policy
            )
            return verdict("error", str(exc)), None
        if not answer["allow"]:
            return verdict("deny", str(answer.get("reason") or "denied by filter")), None
        replacement = answer.get("message")
        if replacement is None:
            return verdict("allow"), None
        if not webhook.config.mutate:
            return verdict("error", "returned a message but is not configured with mutate"), None
        problem = _replacement_problem(envelope["message"], replacement)
        if problem is not None:
            return verdict("error", problem), None
        return verdict("mutate"), replacement


def _replacement_problem(original: dict[str, Any], replacement: Any) -> str | None:
    try:
        old, new = classify(original), classify(replacement)
    except ProtocolError as exc:
        return f"replacement is not a JSON-RPC message: {exc}"
    if (old.kind, old.id, old.method) != (new.kind, new.id, new.method):
        return "a replacement may not change the message's kind, id or method"
    if target_of(old) != target_of(new):
        return "a replacement may not change the message's target"
    return None
