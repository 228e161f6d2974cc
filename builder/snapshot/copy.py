"""The plain-copy snapshotter: the merged parent tree is copied into a real directory, the
command runs in it, and the diff is computed by comparing the tree with the parent view.

The diff reproduces what overlayfs (index=off, metacopy=off, redirect_dir=off) leaves in an
upper dir:
- an entry whose inode changed in any way during the run (ctime after the start) is included
  whole, as overlay copies a file up on any change of data or metadata;
- a deleted entry becomes a 0/0 character device;
- a directory made where the parent image had an entry (e.g. `rm -rf d && mkdir d`) is opaque,
  as overlay marks a directory created over a whiteout;
- the parent directories of included entries are included with their current metadata.
Known limits: overlay also copies a file up when it is merely opened for writing; a copy
cannot see an open that changed nothing. Files hardlinked in a lower layer are separate files
in the copy, as they become in overlay once written; but overlay still shows them with one
inode number while untouched, so e.g. `cp -a` of such files links the copies under overlay
and not under the copy snapshotter (same contents, different link structure). Times: entries that are only copied up (a chmod, the
parents of a changed file) keep their exact mtimes in both snapshotters; a directory whose
entries the command changed gets the time of that change, which differs between two runs of
the same command whichever snapshotter runs it (the layer writer clamps it to
SOURCE_DATE_EPOCH when one is set, which makes layers reproducible).
"""
from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from typing import Sequence

from builder.errors import SandboxError
from builder.snapshot.base import ActiveSnapshot, coarse_clock_after, prepare_dest
from builder.snapshot.btime import birth_time_ns
from builder.snapshot.view import LayeredView, copy_metadata, flatten
from builder.userns import opaque_xattr


class CopySnapshot(ActiveSnapshot):
    kind = "copy"

    def __init__(self, lower_dirs: Sequence[Path], work_dir: Path) -> None:
        super().__init__(lower_dirs, work_dir)
        self._rootfs = self.work_dir / "rootfs"
        self.dir_inodes: dict[str, int] = {}
        # Overlay without index breaks hardlinks between lower files on copy-up; so does this.
        flatten(self.lower_dirs, self._rootfs, hardlink=False, keep_hardlinks=False,
                dir_inodes=self.dir_inodes)
        if not self.lower_dirs:
            os.chmod(self._rootfs, 0o755)
        # Changes are told by ctime: everything the copy itself did must be older than this.
        self.started_ns = time.time_ns()
        coarse_clock_after(self.started_ns)

    @property
    def rootfs(self) -> Path:
        return self._rootfs

    @property
    def write_base(self) -> Path:
        return self._rootfs

    def diff(self, dest: Path) -> None:
        dest = Path(dest)
        prepare_dest(dest)
        writer = _DiffWriter(self, dest)
        writer.run()


class _DiffWriter:
    def __init__(self, snapshot: CopySnapshot, dest: Path) -> None:
        self.root = snapshot.rootfs
        self.view: LayeredView = snapshot.view
        self.t0 = snapshot.started_ns
        self.dir_inodes = snapshot.dir_inodes
        self.dest = dest
        self.skip = snapshot.placeholder_leftovers()
        self.created = set(snapshot.created_dirs())
        self.same_fs = False
        self.made_dirs: list[tuple[str, ...]] = []  # dest dirs, to fix metadata at the end
        self.opaque: set[tuple[str, ...]] = set()
        self.copied_inodes: dict[int, Path] = {}  # keeps hardlink groups when copying across file systems

    def run(self) -> None:
        self.dest.mkdir()
        self.same_fs = os.stat(self.dest).st_dev == os.stat(self.root).st_dev
        self.made_dirs.append(())
        self._walk((), new=False)
        for parts in sorted(self.made_dirs, key=len, reverse=True):
            target = self.dest.joinpath(*parts)
            source = self.root.joinpath(*parts)
            copy_metadata(source, target, os.lstat(source))
            if parts in self.opaque:
                os.setxattr(target, opaque_xattr(), b"y", follow_symlinks=False)

    def _fresh_dir(self, parts: tuple[str, ...], st: os.stat_result) -> bool:
        """Was this dir made during the run (not the one the parent tree had here)?"""
        if self.dir_inodes.get("/" + "/".join(parts)) != st.st_ino:
            return True
        born = birth_time_ns(self.root.joinpath(*parts))
        return born is not None and born > self.t0

    def _only_placeholders(self, parts: tuple[str, ...]) -> bool:
        """True for a dir made for mount points that the command left alone."""
        host = self.root.joinpath(*parts)
        if os.lstat(host).st_ctime_ns > self.t0:
            return False
        for name in os.listdir(host):
            child = parts + (name,)
            if child in self.skip:
                continue
            if child in self.created and os.path.isdir(host / name) and self._only_placeholders(child):
                continue
            return False
        return True

    def _walk(self, parts: tuple[str, ...], *, new: bool) -> bool:
        """Emit the changes inside dir `parts`; True if anything was emitted."""
        host_dir = self.root.joinpath(*parts)
        names = sorted(os.listdir(host_dir))
        emitted = False
        for name in names:
            child = parts + (name,)
            if child in self.skip:
                continue
            host = host_dir / name
            st = os.lstat(host)
            if stat.S_ISSOCK(st.st_mode):
                continue  # sockets do not go into layers
            before = None if new else self.view.entry(child)
            if stat.S_ISDIR(st.st_mode):
                if before is not None and stat.S_ISDIR(before[1].st_mode) and not self._fresh_dir(child, st):
                    inner = self._walk(child, new=False)
                    if inner or st.st_ctime_ns > self.t0:
                        self._emit_dir(child)
                        emitted = True
                    continue
                if child in self.created and self._only_placeholders(child):
                    continue  # made for a mount point and left alone
                self._emit_dir(child)
                if before is not None:
                    self.opaque.add(child)
                self._walk(child, new=True)
                emitted = True
                continue
            if before is None or stat.S_IFMT(before[1].st_mode) != stat.S_IFMT(st.st_mode) or st.st_ctime_ns > self.t0:
                self._emit_file(child, host, st)
                emitted = True
        if not new:
            present = set(names)
            for name in self.view.children(parts):
                if name not in present:
                    self._emit_whiteout(parts + (name,))
                    emitted = True
        return emitted

    def _ensure_parents(self, parts: tuple[str, ...]) -> None:
        for depth in range(1, len(parts)):
            prefix = parts[:depth]
            target = self.dest.joinpath(*prefix)
            if not os.path.lexists(target):
                target.mkdir()
                self.made_dirs.append(prefix)

    def _emit_dir(self, parts: tuple[str, ...]) -> None:
        self._ensure_parents(parts)
        target = self.dest.joinpath(*parts)
        if not os.path.lexists(target):
            target.mkdir()
            self.made_dirs.append(parts)

    def _emit_file(self, parts: tuple[str, ...], host: Path, st: os.stat_result) -> None:
        self._ensure_parents(parts)
        target = self.dest.joinpath(*parts)
        if self.same_fs:
            # A link keeps content, metadata and hardlink groups at no cost (the rootfs goes away).
            os.link(host, target, follow_symlinks=False)
            return
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            first = self.copied_inodes.get(st.st_ino)
            if first is not None:
                os.link(first, target, follow_symlinks=False)
                return
            self.copied_inodes[st.st_ino] = target
        if stat.S_ISREG(st.st_mode):
            shutil.copyfile(host, target, follow_symlinks=False)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(host), target)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            os.mknod(target, st.st_mode, st.st_rdev)
        else:
            raise SandboxError(f"cannot record {'/' + '/'.join(parts)} in a layer: unsupported file type")
        copy_metadata(host, target, st)

    def _emit_whiteout(self, parts: tuple[str, ...]) -> None:
        self._ensure_parents(parts)
        target = self.dest.joinpath(*parts)
        os.mknod(target, stat.S_IFCHR | 0o000, 0)


__all__ = ["CopySnapshot"]
