"""Pure status functions: conditions with real reasons, idleness, transition times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from corral.operator.status import (
    Observed,
    desired_conditions,
    is_idle,
    last_activity,
    merge_conditions,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def deployment(
    ready: int, available: str = "True", progressing: str = "NewReplicaSetAvailable"
) -> dict[str, Any]:
    return {
        "status": {
            "readyReplicas": ready,
            "conditions": [
                {"type": "Available", "status": available, "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": progressing},
            ],
        }
    }


def waiting_pod(reason: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "p-1"},
        "status": {
            "containerStatuses": [
                {"name": "server", "state": {"waiting": {"reason": reason, "message": "boom"}}}
            ]
        },
    }


UNSCHEDULABLE = {
    "metadata": {"name": "p-2"},
    "status": {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/2 nodes are available",
            }
        ]
    },
}


def by_type(observed: Observed) -> dict[str, Any]:
    return {c.type: c for c in desired_conditions(observed)}


@pytest.mark.parametrize(
    ("pods", "reason"),
    [
        ((waiting_pod("ImagePullBackOff"),), "ImagePullFailure"),
        ((waiting_pod("ErrImagePull"),), "ImagePullFailure"),
        ((waiting_pod("CrashLoopBackOff"),), "CrashLoop"),
        ((waiting_pod("CreateContainerConfigError"),), "ContainerConfigError"),
        ((UNSCHEDULABLE,), "Unschedulable"),
    ],
)
def test_degraded_names_the_real_reason(pods: tuple[dict[str, Any], ...], reason: str) -> None:
    conditions = by_type(Observed(generation=3, deployment=deployment(0, "False"), pods=pods))
    assert conditions["Degraded"].status == "True"
    assert conditions["Degraded"].reason == reason
    assert conditions["Ready"].status == "False"
    assert conditions["Ready"].reason == reason
    assert conditions["Degraded"].observed_generation == 3


def test_invalid_config_is_degraded_and_not_ready() -> None:
    conditions = by_type(Observed(generation=1, problems=("catalog entry 'x' not found",)))
    assert conditions["ConfigValid"].status == "False"
    assert "catalog entry 'x'" in conditions["ConfigValid"].message
    assert conditions["Degraded"].reason == "InvalidConfig"
    assert conditions["Ready"].reason == "InvalidConfig"
    assert conditions["Available"].status == "False"


def test_ready_when_all_replicas_are() -> None:
    conditions = by_type(Observed(generation=1, deployment=deployment(2), desired_replicas=2))
    assert conditions["Ready"].status == "True"
    assert conditions["Available"].status == "True"
    assert conditions["Degraded"].status == "False"
    assert conditions["ConfigValid"].status == "True"


def test_partly_ready_is_starting() -> None:
    conditions = by_type(Observed(generation=1, deployment=deployment(1), desired_replicas=2))
    assert (conditions["Ready"].status, conditions["Ready"].reason) == ("False", "Starting")


def test_scaled_to_zero_is_reported_as_such() -> None:
    conditions = by_type(
        Observed(generation=1, deployment=deployment(0), desired_replicas=0, asleep=True)
    )
    assert conditions["Ready"].reason == "ScaledToZero"
    assert conditions["Available"].reason == "ScaledToZero"


def test_progress_deadline_is_degraded() -> None:
    stuck = deployment(0, "False", progressing="ProgressDeadlineExceeded")
    assert by_type(Observed(generation=1, deployment=stuck))["Degraded"].reason == (
        "ProgressDeadlineExceeded"
    )


@pytest.mark.parametrize(
    ("activity", "timeout", "idle"),
    [
        (NOW - timedelta(seconds=59), 60, False),
        (NOW - timedelta(seconds=60), 60, True),
        (NOW - timedelta(days=9), 0, False),
        (None, 60, False),
    ],
)
def test_idleness(activity: datetime | None, timeout: int, idle: bool) -> None:
    assert is_idle(activity, timeout, NOW) is idle


def test_last_activity_takes_the_latest_time_given() -> None:
    assert last_activity("2026-01-01T10:00:00Z", None, "2026-01-01T11:00:00Z", "bad") == datetime(
        2026, 1, 1, 11, tzinfo=UTC
    )


def test_transition_time_kept_while_status_unchanged() -> None:
    first = merge_conditions(
        [], desired_conditions(Observed(generation=1, deployment=deployment(1))), NOW
    )
    wire = [c.wire() for c in first]
    later = NOW + timedelta(minutes=5)
    again = merge_conditions(
        wire, desired_conditions(Observed(generation=2, deployment=deployment(1))), later
    )
    broken = merge_conditions(
        wire, desired_conditions(Observed(generation=2, deployment=deployment(0))), later
    )
    ready = {c.type: c for c in again}["Ready"]
    assert ready.last_transition_time == NOW
    assert ready.observed_generation == 2
    assert {c.type: c for c in broken}["Ready"].last_transition_time == later
