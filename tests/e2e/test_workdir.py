"""WORKDIR makes its directory as BuildKit does: who owns what it makes, what its layer holds.

Every expectation here is what dockerd 20.10's BuildKit wrote for the same Buildfile over the
same base (issue 13, item 5); the one exception (USER without /etc/passwd) is marked."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import layer_members, write_context

import builder
from builder.image.importer import import_rootfs
from builder.image.store import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners other than the caller need root")

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nbob:x:2000:50::/:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:app\napp:x:1000:\n"


def _base(store_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    for name, mode, owner in (("etc", 0o755, 0), ("home", 0o755, 0), ("home/app", 0o750, 1000), ("tmp", 0o1777, 0)):
        (root / name).mkdir(parents=True)
        os.chown(root / name, owner, owner)
        os.chmod(root / name, mode)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    import_rootfs(Store.open(store_root), root, "wd-base:1")


def _layers(store_root: Path, result) -> list[dict[str, tuple[int, int, int]]]:
    store = Store.open(store_root)
    found = []
    for layer in result.manifest["layers"]:
        members = layer_members(store, layer["digest"])
        found.append({name: (member.mode, member.uid, member.gid) for name, member in members.items()})
    return found


def test_workdir_directories_belong_to_the_user_as_buildkit_file_operations_read_it(tmp_path, store_root) -> None:
    _base(store_root, tmp_path)
    text = (
        "FROM wd-base:1\n"
        "USER app\nWORKDIR /home/app/w\n"  # a name: uid and gid from /etc/passwd
        "WORKDIR /tmp\n"  # exists: an empty layer, /tmp untouched
        "USER 1234:55\nWORKDIR /n/m\n"  # numbers need no passwd entry
        "USER app:staff\nWORKDIR /g\n"  # a group name from /etc/group
        "USER bob\nWORKDIR /b\n"  # the passwd entry's gid
        "USER 2000\nWORKDIR /c\n"  # a number is the gid too, whatever passwd says
        "USER app:nosuchgroup\nWORKDIR /r\n"  # an unknown group keeps the user's gid
        "USER nosuch\nWORKDIR /q\n"  # an unknown user is root
        "USER root:staff\nWORKDIR /s\n"
        "USER 007\nWORKDIR /tmp/new\n"
    )
    context = write_context(tmp_path / "ctx", {"Buildfile": text})
    result = builder.build(context, root=store_root)
    layers = _layers(store_root, result)[1:]  # after the base's
    assert layers == [
        {"home": (0o755, 0, 0), "home/app": (0o750, 1000, 1000), "home/app/w": (0o755, 1000, 1000)},
        {},
        {"n": (0o755, 1234, 55), "n/m": (0o755, 1234, 55)},
        {"g": (0o755, 1000, 50)},
        {"b": (0o755, 2000, 50)},
        {"c": (0o755, 2000, 2000)},
        {"r": (0o755, 1000, 1000)},
        {"q": (0o755, 0, 0)},
        {"s": (0o755, 0, 50)},
        {"tmp": (0o1777, 0, 0), "tmp/new": (0o755, 7, 7)},
    ]
    assert result.config["config"]["WorkingDir"] == "/tmp/new"


def test_a_user_name_without_passwd_makes_root_directories(tmp_path, store_root) -> None:
    # Current BuildKit reads a missing /etc/passwd as "no such user" (root); 20.10 failed with
    # "invalid user index: -1", a bug fixed since.
    context = write_context(tmp_path / "ctx", {"Buildfile": "FROM scratch\nUSER bob\nWORKDIR /app/x\n"})
    result = builder.build(context, root=store_root)
    assert _layers(store_root, result) == [{"app": (0o755, 0, 0), "app/x": (0o755, 0, 0)}]
