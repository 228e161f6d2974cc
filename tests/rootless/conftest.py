"""The rootless tests run as root, which makes ordinary users and runs the builder as them."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rootless.rootless_support import Users, user_namespaces_work

if os.geteuid() != 0:
    pytest.skip("making users and switching to them needs root", allow_module_level=True)


@pytest.fixture(scope="session")
def users():
    assert shutil.which("runuser") and shutil.which("useradd"), "util-linux's runuser and shadow's useradd are needed"
    assert Path("/usr/bin/newuidmap").exists(), "apt-get install uidmap (README's install command does)"
    assert user_namespaces_work(), "this kernel refuses user namespaces to ordinary users"
    made = Users()
    yield made
    made.close()


@pytest.fixture(scope="session")
def shared_busybox_tar(users, busybox_tar: Path) -> Path:
    """The suite's busybox rootfs tar (home/app is 1000:1000) where every user can read it."""
    copy = users.base / "busybox-rootfs.tar"
    shutil.copyfile(busybox_tar, copy)
    os.chmod(copy, 0o644)
    return copy
