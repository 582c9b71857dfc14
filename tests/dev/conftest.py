"""Fixtures of the `corral dev` tests: one platform shared by the module's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dev.platform import DevPlatform, running_platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPlatform]:
    with running_platform(tmp_path_factory.mktemp("corral-dev")) as running:
        yield running
