"""Fixtures for the sandbox/snapshot tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.busybox import make_busybox_rootfs
from sandbox.helpers import Runner


@pytest.fixture(scope="session")
def busybox_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox rootfs used as the bottom layer dir (never modified by tests)."""
    return make_busybox_rootfs(tmp_path_factory.mktemp("base") / "rootfs")


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path)
