"""The pinned versions and the cache of built binaries (see `build` beside this module).

Rule: versions.env is the one place versions are set; binaries are only ever built by `build`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build"
VERSIONS_FILE = HERE / "versions.env"
BUILD_LOG_TAIL = 15
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)


class ClusterError(RuntimeError):
    """The control plane could not be built, started or reached; the message says what to do."""


def pinned_versions() -> dict[str, str]:
    """The versions pinned in versions.env, the single place they are set."""
    versions: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


@dataclass(frozen=True)
class Toolset:
    """The built binaries and KWOK stages of one pinned version, in the build cache."""

    directory: Path

    def binary(self, name: str) -> Path:
        return self.directory / "bin" / name

    @property
    def kwok_stages(self) -> Path:
        return self.directory / "kwok-stages.yaml"

    def missing(self) -> list[str]:
        absent = [name for name in BINARIES if not os.access(self.binary(name), os.X_OK)]
        if not self.kwok_stages.is_file():
            absent.append(self.kwok_stages.name)
        return absent


def cache_toolset() -> Toolset:
    """Where the build script puts (or has put) the pinned version's binaries."""
    result = subprocess.run(
        [str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=True
    )
    return Toolset(Path(result.stdout.strip()))


def build(log: Path | None = None) -> Toolset:
    """Builds whatever is missing from the cache (a no-op when warm) and returns the toolset.

    Build output goes to the file `log` when given, else to this process's stderr.
    """
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("w")) if log is not None else None
        result = subprocess.run(
            [str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=out, text=True, check=False
        )
    if result.returncode != 0:
        tail = ""
        if log is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-BUILD_LOG_TAIL:])
            tail = f"; the end of its log ({log}):\n{tail}"
        raise ClusterError(
            f"{BUILD_SCRIPT} failed with exit code {result.returncode}{tail}\n"
            "Fix what it reports and run `make cluster-build`."
        )
    toolset = Toolset(Path(result.stdout.strip().splitlines()[-1]))
    if toolset.missing():
        raise ClusterError(f"the build finished but {toolset.missing()} are missing")
    return toolset
