"""Status of a workload from what the cluster reports: conditions, readiness and idleness.

Rule: pure functions over plain dicts (Deployment and Pod bodies) and explicit times; the caller
passes `now`. Degraded carries the real reason: invalid config, image pull failure, crash loop,
unschedulable pod, or a rollout past its deadline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from corral.api.conditions import (
    AVAILABLE,
    CONFIG_VALID,
    DEGRADED,
    PROGRESSING,
    READY,
    Condition,
    Status,
    set_condition,
)

IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
CRASH_REASONS = frozenset({"CrashLoopBackOff"})
CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
STARTING = "Starting"


@dataclass(frozen=True)
class Observed:
    """What is known about one workload at one moment."""

    generation: int | None
    problems: tuple[str, ...] = ()
    deployment: Mapping[str, Any] | None = None
    pods: tuple[Mapping[str, Any], ...] = ()
    desired_replicas: int = 1
    asleep: bool = False


@dataclass(frozen=True)
class Fault:
    """Why a workload is degraded."""

    reason: str
    message: str


def parse_time(value: str | datetime | None) -> datetime | None:
    """An RFC 3339 time (as Kubernetes writes it) as an aware datetime; None when absent or bad."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def last_activity(*times: str | datetime | None) -> datetime | None:
    """The latest of the given times (creation, last call, wake request)."""
    parsed = [t for t in (parse_time(v) for v in times) if t is not None]
    return max(parsed, default=None)


def is_idle(activity: datetime | None, idle_timeout: int, now: datetime) -> bool:
    """Idle: an idle timeout is set and nothing happened for that long."""
    if idle_timeout <= 0 or activity is None:
        return False
    return now - activity >= timedelta(seconds=idle_timeout)


def _deployment_condition(deployment: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any]:
    conditions = ((deployment or {}).get("status") or {}).get("conditions") or ()
    return next((c for c in conditions if c.get("type") == type_), {})


def ready_replicas(deployment: Mapping[str, Any] | None) -> int:
    """Ready replicas the Deployment reports."""
    return int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)


def _container_faults(pod: Mapping[str, Any]) -> Iterable[Fault]:
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "?")
    for container in status.get("containerStatuses") or ():
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        detail = f"pod {name} container {container.get('name')}: {waiting.get('message') or reason}"
        if reason in IMAGE_PULL_REASONS:
            yield Fault("ImagePullFailure", f"{detail}; check the image name and pull secrets")
        elif reason in CRASH_REASONS:
            yield Fault("CrashLoop", f"{detail}; see the container's logs")
        elif reason in CONFIG_REASONS:
            yield Fault("ContainerConfigError", f"{detail}; check referenced Secrets/ConfigMaps")
    for condition in status.get("conditions") or ():
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            yield Fault("Unschedulable", f"pod {name}: {condition.get('message', '')}".strip())


def find_fault(observed: Observed) -> Fault | None:
    """The first reason the workload is degraded, or None."""
    if observed.problems:
        return Fault("InvalidConfig", "; ".join(observed.problems))
    for pod in observed.pods:
        for fault in _container_faults(pod):
            return fault
    progressing = _deployment_condition(observed.deployment, "Progressing")
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Fault("ProgressDeadlineExceeded", str(progressing.get("message", "")))
    return None


def _condition(type_: str, status: Status, reason: str, message: str, gen: int | None) -> Condition:
    return Condition(
        type=type_, status=status, reason=reason, message=message, observed_generation=gen
    )


def _copy(deployment: Mapping[str, Any] | None, type_: str, gen: int | None) -> Condition:
    found = _deployment_condition(deployment, type_)
    status = found.get("status")
    if status not in ("True", "False"):
        return _condition(type_, "Unknown", "Pending", "the Deployment reports nothing yet", gen)
    return _condition(
        type_, status, str(found.get("reason") or "Unknown"), str(found.get("message", "")), gen
    )


def _ready(observed: Observed, fault: Fault | None, gen: int | None) -> Condition:
    if observed.problems:
        return _condition(READY, "False", "InvalidConfig", "see ConfigValid", gen)
    if observed.asleep:
        return _condition(
            READY, "False", "ScaledToZero", "idle: scaled to zero until the gateway wakes it", gen
        )
    ready = ready_replicas(observed.deployment)
    want = observed.desired_replicas
    if want > 0 and ready >= want:
        return _condition(READY, "True", "AllReplicasReady", f"{ready}/{want} replicas ready", gen)
    if fault is not None:
        return _condition(READY, "False", fault.reason, fault.message, gen)
    return _condition(READY, "False", STARTING, f"{ready}/{want} replicas ready", gen)


def desired_conditions(observed: Observed) -> list[Condition]:
    """Ready, Available, Progressing, Degraded and ConfigValid for what was observed."""
    gen = observed.generation
    fault = find_fault(observed)
    valid = (
        _condition(CONFIG_VALID, "False", "InvalidConfig", "; ".join(observed.problems), gen)
        if observed.problems
        else _condition(CONFIG_VALID, "True", "Valid", "configuration is valid", gen)
    )
    degraded = (
        _condition(DEGRADED, "True", fault.reason, fault.message, gen)
        if fault is not None
        else _condition(DEGRADED, "False", "AsExpected", "", gen)
    )
    if observed.problems:
        available = _condition(AVAILABLE, "False", "InvalidConfig", "see ConfigValid", gen)
        progressing = _condition(PROGRESSING, "False", "InvalidConfig", "see ConfigValid", gen)
    elif observed.asleep:
        available = _condition(AVAILABLE, "False", "ScaledToZero", "no replicas while idle", gen)
        progressing = _copy(observed.deployment, PROGRESSING, gen)
    else:
        available = _copy(observed.deployment, AVAILABLE, gen)
        progressing = _copy(observed.deployment, PROGRESSING, gen)
    return [_ready(observed, fault, gen), available, progressing, degraded, valid]


def per_user_conditions(generation: int | None) -> list[Condition]:
    """A perUser server runs nothing itself: it is ready to have instances made."""
    message = "perUser: the gateway creates one MCPServerInstance per user"
    return [
        _condition(READY, "True", "PerUser", message, generation),
        _condition(CONFIG_VALID, "True", "Valid", "configuration is valid", generation),
        _condition(DEGRADED, "False", "AsExpected", "", generation),
    ]


def merge_conditions(
    old: Sequence[Mapping[str, Any]] | None, new: Iterable[Condition], now: datetime
) -> list[Condition]:
    """`new` put over the old conditions, keeping transition times of unchanged statuses."""
    merged = [Condition.model_validate(c) for c in old or ()]
    for condition in new:
        merged = set_condition(merged, condition, now)
    return merged


def wire_conditions(conditions: Iterable[Condition]) -> list[dict[str, Any]]:
    """Conditions as the API server stores them."""
    return [c.wire() for c in conditions]


def changed_status(old: Sequence[Mapping[str, Any]] | None, new: Sequence[Condition]) -> list[str]:
    """Types whose status differs between `old` and `new` (for Events)."""
    before = {c.get("type"): c.get("status") for c in old or ()}
    return [c.type for c in new if before.get(c.type) != c.status]
