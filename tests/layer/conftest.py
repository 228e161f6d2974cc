"""A layer dir holding every kind of entry, built the same way in any order or umask."""
from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from builder.layer import iter_layer_entries, write_layer

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, trusted.* xattrs, chown)")

EPOCH = 1_700_000_000
OLD_MTIME = 1_000_000_000  # older than EPOCH: kept as is
CAPABILITY = b"\x01\x00\x00\x02\x00\x20\x00\x00" + bytes(12)  # cap_net_raw, binary with NULs
LONG_DIR = "long/" + "d" * 100
LONG_FILE = LONG_DIR + "/" + "f" * (200 - len(LONG_DIR) - 1)  # a 200-character path
NON_UTF8 = b"home/user/caf\xe9"  # latin-1 name, not valid UTF-8


@dataclass
class Entry:
    path: bytes
    create: Callable[[bytes], None]
    mode: int
    uid: int = 0
    gid: int = 0
    xattrs: dict[str, bytes] | None = None
    mtime: int | None = None  # None: "now" (newer than EPOCH)


def _file(content: bytes) -> Callable[[bytes], None]:
    def create(path: bytes) -> None:
        with open(path, "wb") as f:
            f.write(content)
    return create


def _dir(path: bytes) -> None:
    os.mkdir(path)


def _symlink(target: bytes) -> Callable[[bytes], None]:
    return lambda path: os.symlink(target, path)


def _node(kind: int, major: int, minor: int) -> Callable[[bytes], None]:
    return lambda path: os.mknod(path, kind | 0o600, os.makedev(major, minor))


def tree_entries() -> list[Entry]:
    """Every entry kind; parents listed before children."""
    return [
        Entry(b"bin", _dir, 0o755),
        Entry(b"bin/ping", _file(b"ping binary\n"), 0o4755,
              xattrs={"security.capability": CAPABILITY, "user.note": b"hello"}),
        Entry(b"bin/sh", _symlink(b"busybox"), 0o777),
        Entry(b"bin/abs", _symlink(b"/etc/passwd"), 0o777),
        Entry(b"a", _dir, 0o755),
        Entry(b"a/data", _file(b"shared inode\n" * 100), 0o640, uid=12, gid=34, mtime=OLD_MTIME),
        Entry(b"z", _dir, 0o755),
        # z/data-link: a hardlink of a/data, made by the builder below
        Entry(b"etc", _dir, 0o755),
        Entry(b"etc/passwd", _file(b"root:x:0:0::/root:/bin/sh\n"), 0o644,
              xattrs={"trusted.overlay.origin": b"\x00secret"}),
        Entry(b"etc/removed", _node(stat.S_IFCHR, 0, 0), 0o000),  # overlay whiteout
        Entry(b"home", _dir, 0o755),
        Entry(b"home/user", _dir, 0o700, uid=1000, gid=1000),
        Entry(b"home/user/file with spaces.txt", _file(b"spaces\n"), 0o600, uid=1000, gid=1000),
        Entry(b"home/user/new\nline", _file(b"newline\n"), 0o644, uid=1000, gid=1000),
        Entry(NON_UTF8, _file(b"latin-1 name\n"), 0o644, uid=1000, gid=1000),
        Entry("home/user/café".encode(), _file(b"utf-8 name\n"), 0o644),
        Entry(b"home/user/big-uid", _file(b"x"), 0o644, uid=3_000_000, gid=3_000_001),
        Entry(b"long", _dir, 0o755),
        Entry(LONG_DIR.encode(), _dir, 0o755),
        Entry(LONG_FILE.encode(), _file(b"long name\n"), 0o644),
        Entry(b"empty", _dir, 0o1777),
        Entry(b"srv", _dir, 0o2775, gid=50),
        Entry(b"run", _dir, 0o755),
        Entry(b"run/fifo", lambda p: os.mkfifo(p), 0o600),
        Entry(b"dev", _dir, 0o755),
        Entry(b"dev/null", _node(stat.S_IFCHR, 1, 3), 0o666),
        Entry(b"dev/loop0", _node(stat.S_IFBLK, 7, 0), 0o660, gid=6),
        Entry(b"var", _dir, 0o755),
        Entry(b"var/cache", _dir, 0o755,
              xattrs={"trusted.overlay.opaque": b"y", "user.cache": b"1"}),
        Entry(b"var/cache/keep", _file(b"kept\n"), 0o644),
    ]


def build_tree(root: Path, *, reverse: bool = False, umask: int = 0o022, now: int | None = None) -> Path:
    """Create the tree under root; `reverse` creates siblings in the opposite order."""
    rootb = os.fsencode(root)
    entries = tree_entries()
    old_umask = os.umask(umask)
    try:
        os.makedirs(rootb, exist_ok=True)
        os.chmod(rootb, 0o755)
        # Parents first, but otherwise in the requested order.
        ordered = sorted(entries, key=lambda e: e.path.count(b"/"))
        if reverse:
            ordered = sorted(reversed(entries), key=lambda e: e.path.count(b"/"))
        for entry in ordered:
            path = os.path.join(rootb, entry.path)
            entry.create(path)
            os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
            for key, value in (entry.xattrs or {}).items():
                os.setxattr(path, key, value, follow_symlinks=False)
            if not stat.S_ISLNK(os.lstat(path).st_mode):
                os.chmod(path, entry.mode)
        # The same inode under two paths in different dirs; link direction depends on order.
        first, second = os.path.join(rootb, b"a/data"), os.path.join(rootb, b"z/data-link")
        if reverse:
            os.rename(first, second)
            os.link(second, first)
        else:
            os.link(first, second)
        # mtimes last, deepest first, so creating children does not change them again.
        stamp = now if now is not None else EPOCH + 1000
        for entry in sorted(entries, key=lambda e: -e.path.count(b"/")):
            path = os.path.join(rootb, entry.path)
            mtime = entry.mtime if entry.mtime is not None else stamp
            os.utime(path, (mtime, mtime), follow_symlinks=False)
        os.utime(os.path.join(rootb, b"z"), (stamp, stamp))
    finally:
        os.umask(old_umask)
    return root


def layer_bytes(src: Path, **kwargs) -> tuple[bytes, object]:
    out = io.BytesIO()
    digests = write_layer(src, out, **kwargs)
    return out.getvalue(), digests


def entries_of(blob: bytes) -> list:
    return list(iter_layer_entries(io.BytesIO(blob)))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return build_tree(tmp_path / "tree")
