"""Helpers for the sandbox/snapshot tests: run one command under a given snapshotter and get
its diff as a layer dir; list a layer dir in a comparable form."""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from builder.sandbox import run
from builder.snapshot import prepare
from builder.userns import opaque_xattr


@dataclass
class RunResult:
    status: int
    output: bytes
    diff: Path
    started_ns: int


class Runner:
    """Runs shell commands over layer dirs with one snapshotter and keeps each diff."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def __call__(self, layers: Sequence[Path], script: str, kind: str, *, user: str | None = None,
                 env: dict[str, str] | None = None, workdir: str = "/", network: str = "host") -> RunResult:
        self.count += 1
        work = self.root / f"w{self.count}"
        diff = self.root / f"d{self.count}-{kind}"
        snap = prepare(list(layers), work, kind)
        assert snap.kind == kind
        chunks: list[bytes] = []
        try:
            status = run(snap, ["/bin/sh", "-c", script], env=env or {}, workdir=workdir, user=user,
                         network=network, on_output=chunks.append)
            started = snap.started_ns
            snap.diff(diff)
        finally:
            snap.cleanup()
        assert not work.exists()
        return RunResult(status, b"".join(chunks), diff, started)


def _xattrs(path: Path) -> dict[str, str]:
    out = {}
    for name in sorted(os.listxattr(path, follow_symlinks=False)):
        out[name] = os.getxattr(path, name, follow_symlinks=False).hex()
    return out


def listing(layer_dir: Path, *, since_ns: int) -> list[tuple]:
    """Every entry of a layer dir: type, mode, uid, gid, size, content hash, link target, xattrs,
    device number, hardlink group and mtime. Mtimes made during the run (>= since_ns) cannot
    be equal across two runs, so they are recorded as 'new'; older ones must match exactly."""
    rows = []
    first_path_of_inode: dict[int, str] = {}
    for root, dirnames, filenames in os.walk(layer_dir):
        dirnames.sort()
        for name in sorted(dirnames + filenames) + ([] if root != str(layer_dir) else ["."]):
            path = Path(root) / name if name != "." else Path(root)
            rel = os.path.relpath(path, layer_dir)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            digest = ""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            group = ""
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                group = first_path_of_inode.setdefault(st.st_ino, rel)
            is_whiteout = stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
            mtime = "new" if st.st_mtime_ns >= since_ns else st.st_mtime_ns
            if is_whiteout:
                mtime = "-"  # a whiteout's own time is not part of a layer
            rows.append((rel, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                         st.st_size if not stat.S_ISDIR(st.st_mode) else 0, digest, target,
                         tuple(_xattrs(path).items()), st.st_rdev, group, mtime))
    return sorted(rows)


def make_layer(root: Path, entries: dict[str, object], *, mtime: int = 1600000000) -> Path:
    """Write a layer dir from {path: spec}: a str/bytes is a file, None a dir, ('link', target) a
    symlink, ('hardlink', other) a hardlink, 'WHITEOUT' a 0/0 device, 'OPAQUE' an opaque dir."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, spec in sorted(entries.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if spec is None or spec == "OPAQUE":
            path.mkdir(exist_ok=True)
            os.chmod(path, 0o755)
            if spec == "OPAQUE":
                os.setxattr(path, opaque_xattr(), b"y")
        elif spec == "WHITEOUT":
            os.mknod(path, stat.S_IFCHR | 0o000, 0)
        elif isinstance(spec, tuple) and spec[0] == "link":
            os.symlink(spec[1], path)
        elif isinstance(spec, tuple) and spec[0] == "hardlink":
            os.link(root / spec[1], path)
        else:
            path.write_bytes(spec.encode() if isinstance(spec, str) else spec)
            os.chmod(path, 0o644)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, ns=(mtime * 10**9, mtime * 10**9), follow_symlinks=False)
    os.utime(root, ns=(mtime * 10**9, mtime * 10**9))
    return root
