"""Rendering the Corral chart with the built helm: the rendered objects as dicts.

Rule: runs helm (lint, template) as a subprocess and parses its output; knows nothing about any
particular test. The end-to-end test uses it too, so the cluster runs what the chart renders.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "corral"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
MINIMAL = {"gateway.publicBaseUrl": "https://corral.example.com"}

Object = dict[str, Any]


class HelmError(AssertionError):
    """helm exited non-zero; the message holds its output."""


def run_helm(helm: Path, *args: str) -> str:
    """helm's stdout; raises HelmError with stderr when it fails."""
    result = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise HelmError(f"helm {' '.join(args[:2])} failed:\n{result.stderr}{result.stdout}")
    return result.stdout


def value_args(
    sets: Mapping[str, str] = MINIMAL, files: Iterable[Path] = (), json_sets: Mapping[str, str] = {}
) -> list[str]:
    """`-f`, `--set` and `--set-json` arguments."""
    args: list[str] = []
    for path in files:
        args += ["-f", str(path)]
    for key, value in sets.items():
        args += ["--set-string", f"{key}={value}"]
    for key, value in json_sets.items():
        args += ["--set-json", f"{key}={value}"]
    return args


@dataclass(frozen=True)
class Rendered:
    """The objects of one `helm template`."""

    objects: list[Object]

    def of_kind(self, kind: str) -> list[Object]:
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind: str, name: str) -> Object:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def yaml(self, *, without_kinds: Iterable[str] = ()) -> str:
        skip = set(without_kinds)
        return yaml.safe_dump_all([o for o in self.objects if o["kind"] not in skip])


def render(
    helm: Path,
    *,
    release: str = "corral",
    namespace: str = "corral-system",
    values: list[str] | None = None,
) -> Rendered:
    """`helm template` of the chart with `values` arguments (default: the minimal values)."""
    output = run_helm(
        helm, "template", release, str(CHART), "--namespace", namespace,
        *(value_args() if values is None else values),
    )  # fmt: skip
    return Rendered([o for o in yaml.safe_load_all(output) if o])


def chart_crds() -> list[Object]:
    """The CRDs the chart ships in its `crds/` directory."""
    return [yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml"))]
