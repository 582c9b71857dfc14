"""The scenarios `python -m bench run NAME` knows, in the order `make bench` runs them.

Rule: each scenario is a function taking `Options` and returning the JSON-ready result document
(figures, targets with whether they were met, notes); the runner writes it to bench/results/.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Options:
    """Knobs shared by the scenarios (`--seconds` per load run, `--quick` for a smoke run)."""

    seconds: float = 6.0
    quick: bool = False


Scenario = Callable[[Options], dict[str, Any]]


NAMES = ("overhead", "audit", "policy", "operator", "sessions", "coldstart")


def load(name: str) -> Scenario:
    """The `run` function of bench/scenarios/<name>.py."""
    if name not in NAMES:
        raise SystemExit(f"unknown scenario {name!r}: choose from {', '.join(NAMES)}")
    module = importlib.import_module(f"bench.scenarios.{name}")
    scenario: Scenario = module.run
    return scenario


def target(
    name: str, value: float, goal: float, *, at_least: bool, unit: str = ""
) -> dict[str, Any]:
    """One target line: the measured value, the goal and whether it was met."""
    met = value >= goal if at_least else value <= goal
    return {
        "name": name,
        "value": round(value, 3),
        "goal": f"{'>=' if at_least else '<='} {goal:g}{unit}",
        "met": met,
        "unit": unit,
    }
