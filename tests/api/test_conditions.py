"""Condition helpers: transitions keep or move lastTransitionTime, order is stable."""

from __future__ import annotations

from datetime import UTC, datetime

import pydantic
import pytest

from corral.api.conditions import (
    CONFIG_VALID,
    READY,
    STANDARD_TYPES,
    Condition,
    find_condition,
    is_true,
    remove_condition,
    set_condition,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)


def ready(status: str, reason: str = "Running", generation: int = 1) -> Condition:
    return Condition.model_validate(
        {"type": READY, "status": status, "reason": reason, "observedGeneration": generation}
    )


def test_standard_types() -> None:
    assert STANDARD_TYPES == ("Ready", "Available", "Progressing", "Degraded", "ConfigValid")


def test_new_condition_gets_now() -> None:
    result = set_condition([], ready("True"), T0)
    assert result[0].last_transition_time == T0


def test_same_status_keeps_transition_time_but_updates_the_rest() -> None:
    first = set_condition([], ready("True"), T0)
    second = set_condition(first, ready("True", reason="StillRunning", generation=2), T1)
    assert second[0].last_transition_time == T0
    assert (second[0].reason, second[0].observed_generation) == ("StillRunning", 2)


def test_status_change_moves_transition_time() -> None:
    first = set_condition([], ready("True"), T0)
    second = set_condition(first, ready("False", reason="CrashLoop"), T1)
    assert second[0].last_transition_time == T1
    assert second[0].status == "False"


def test_other_conditions_and_order_are_kept() -> None:
    valid = Condition(type=CONFIG_VALID, status="True", reason="Valid")
    conditions = set_condition(set_condition([], valid, T0), ready("Unknown"), T0)
    updated = set_condition(conditions, ready("True"), T1)
    assert [c.type for c in updated] == [CONFIG_VALID, READY]
    assert updated[0] == conditions[0]
    assert conditions[1].status == "Unknown"


def test_find_is_true_remove() -> None:
    conditions = set_condition([], ready("True"), T0)
    assert find_condition(conditions, READY) == conditions[0]
    assert find_condition(conditions, "Degraded") is None
    assert find_condition(None, READY) is None
    assert is_true(conditions, READY)
    assert not is_true(conditions, CONFIG_VALID)
    assert remove_condition(conditions, READY) == []


@pytest.mark.parametrize("reason", ["", "has space", "9Starts", "ends-"])
def test_reason_must_be_a_camel_case_word(reason: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        ready("True", reason=reason)


def test_status_is_true_false_or_unknown() -> None:
    with pytest.raises(pydantic.ValidationError):
        ready("Yes")


def test_wire_form() -> None:
    wire = set_condition([], ready("True"), T0)[0].wire()
    assert wire == {
        "type": "Ready",
        "status": "True",
        "reason": "Running",
        "message": "",
        "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
