"""Wheel build hook: a wheel that carries compiled modules is tagged for the Python and platform
that compiled them, and a stale build is never packaged.

Rule: a tree without compiled files builds a pure ``py3-none-any`` wheel. A tree built with
`make native` builds a wheel tagged for this interpreter and platform (``cp311-cp311-linux_x86_64``
for instance), since its extension modules load nowhere else; and the build stops, saying why,
when ``corral.native.check`` refuses the tree (a source edited since it was compiled, compiled
files without their record, a build for another Python).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _native_module(root: Path) -> Any:
    """``corral/native.py`` of the tree being built (it needs only the standard library)."""
    spec = importlib.util.spec_from_file_location("_corral_native", root / "corral" / "native.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        native = _native_module(Path(self.root))
        package = Path(self.root) / "corral"
        try:
            compiled = native.check(package)
        except native.StaleBuildError as exc:
            raise RuntimeError(f"not packaging this tree: {exc}") from None
        if compiled:
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
