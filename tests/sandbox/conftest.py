"""Fixtures for the sandbox/snapshot tests."""
from __future__ import annotations

import os
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


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    """Namespaces, overlayfs and mknod need root: mark (and without root, skip) this area's
    sandbox and snapshot tests; the USER tests run anywhere."""
    here = Path(__file__).parent
    needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and overlayfs")
    for item in items:
        path = Path(str(item.fspath))
        if path.parent == here and path.name != "test_users.py":
            item.add_marker(pytest.mark.root)
            item.add_marker(needs_root)
