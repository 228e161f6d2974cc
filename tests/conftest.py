"""Fixtures shared by every test area: fresh stores and a busybox base image built here."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # so `fixtures.*` imports from every area

from fixtures.busybox import make_busybox_rootfs  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_store_env(monkeypatch, tmp_path_factory):
    """No test may touch the user's real store through the default location."""
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    monkeypatch.delenv("BUILDER_ROOT", raising=False)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("bbroot") / "rootfs")


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory, busybox_rootfs: Path) -> Path:
    """The busybox rootfs as a tar, the way a user would `builder import` it."""
    out = tmp_path_factory.mktemp("bbtar") / "busybox-rootfs.tar"
    subprocess.run(
        ["tar", "--sort=name", "--numeric-owner", "-C", str(busybox_rootfs), "-cf", str(out), "."],
        check=True,
    )
    return out


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_root: Path):
    from builder.image.store import Store

    return Store.open(store_root)


@pytest.fixture
def busybox_store(store, busybox_tar: Path):
    """A fresh store holding `busybox:latest`."""
    from builder.image.importer import import_rootfs

    import_rootfs(store, busybox_tar, "busybox:latest")
    return store


def needs_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and overlayfs")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; .ci/run installs it")
    return found
