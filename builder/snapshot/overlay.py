"""The overlay snapshotter: lower = the image's layer dirs, upper = a fresh dir, mounted by the
sandbox's init inside its private mount namespace (so a killed builder leaves no mount behind).

The one-page limit on mount options is kept by naming every lower dir with a short symlink
(`l/0`, `l/1`, ...) in the work dir and mounting from there with relative paths.

In a user namespace (rootless, see builder.userns) overlay is mounted with `userxattr`: it then
keeps its state in user.overlay.* xattrs (the kernel lets only the initial namespace's root write
trusted.*), which also rules out following redirects, so those are turned off by `nofollow`.
"""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Sequence

from builder.errors import SandboxError
from builder.snapshot.base import ActiveSnapshot, OverlayMount, prepare_dest, same_metadata
from builder.snapshot.view import copy_metadata, is_opaque, is_whiteout
from builder.userns import in_user_namespace, is_overlay_xattr, opaque_xattr

# index=off: copy-up never links to an index; metacopy=off: data is copied with metadata, so
# the upper dir is complete; redirect_dir=off: a renamed lower dir is copied, not redirected.
OVERLAY_OPTIONS = "index=off,metacopy=off,redirect_dir=off"
# The same in a user namespace; redirect_dir=off would still follow redirects, which userxattr refuses.
USERNS_OVERLAY_OPTIONS = "userxattr,index=off,metacopy=off,redirect_dir=nofollow"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_probe_cache: dict[int, bool] = {}


def overlay_options(lower_names: Sequence[str], upper: str, work: str) -> str:
    """The option string; `lower_names` lowest first (overlay wants the topmost first)."""
    lowers = ":".join(reversed(list(lower_names)))
    options = USERNS_OVERLAY_OPTIONS if in_user_namespace() else OVERLAY_OPTIONS
    return f"lowerdir={lowers},upperdir={upper},workdir={work},{options}"


def overlay_supported(work_dir: Path) -> bool:
    """Can an overlay with its upper dir on work_dir's file system be mounted here? (cached per
    file system; tried in a throwaway mount namespace)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    dev = os.stat(work_dir).st_dev
    if dev in _probe_cache:
        return _probe_cache[dev]
    probe = work_dir / ".probe"
    ok = False
    try:
        for name in ("l", "u", "w", "m"):
            (probe / name).mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "mount", "-t", "overlay", "overlay",
             "-o", overlay_options(["l"], "u", "w"), "m"],
            cwd=probe, capture_output=True, timeout=30,
        )
        ok = result.returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    finally:
        subprocess.run(["rm", "-rf", str(probe)], check=False)
    _probe_cache[dev] = ok
    return ok


class OverlaySnapshot(ActiveSnapshot):
    kind = "overlay"

    def __init__(self, lower_dirs: Sequence[Path], work_dir: Path) -> None:
        super().__init__(lower_dirs, work_dir)
        self.upper = self.work_dir / "u"
        self.work = self.work_dir / "w"
        self.target = self.work_dir / "r"
        links = self.work_dir / "l"
        for path in (self.upper, self.work, self.target, links):
            path.mkdir(parents=True)
        names: list[str] = []
        if not self.lower_dirs:
            (links / "e").mkdir()  # FROM scratch: overlay needs at least one lower dir
            names.append("l/e")
        for index, lower in enumerate(self.lower_dirs):
            os.symlink(os.path.abspath(lower), links / str(index))
            names.append(f"l/{index}")
        self._options = overlay_options(names, "u", "w")
        if len(self._options) >= PAGE_SIZE:
            raise SandboxError(
                f"too many layers for one overlay mount ({len(self.lower_dirs)})",
                hint="squash some layers of the base image",
            )
        # The merged root takes its owner, mode and times from the upper dir's root.
        root = self.view.entry(())
        if root is not None:
            copy_metadata(root[0], self.upper, root[1])
        else:
            os.chmod(self.upper, 0o755)  # not the builder's umask

    @property
    def rootfs(self) -> Path:
        return self.target

    @property
    def overlay(self) -> OverlayMount:
        return OverlayMount(cwd=str(self.work_dir), options=self._options, target=str(self.target))

    @property
    def write_base(self) -> Path:
        return self.upper

    def diff(self, dest: Path) -> None:
        dest = Path(dest)
        self._remove_placeholders()
        normalise_upper(self.upper)
        prepare_dest(dest)
        try:
            os.rename(self.upper, dest)
        except OSError as exc:
            # Another file system: copy, keeping hardlinks, xattrs, devices and times.
            result = subprocess.run(["cp", "-a", str(self.upper), str(dest)], capture_output=True, text=True)
            if result.returncode != 0:
                raise SandboxError(f"cannot copy the upper dir to {dest}: {result.stderr.strip()}") from exc

    def _remove_placeholders(self) -> None:
        leftovers = self.placeholder_leftovers()
        for parts in sorted(leftovers, key=len, reverse=True):
            _remove_keeping_parent_time(self.upper.joinpath(*parts))
        created = set(self.created_dirs())
        ancestors = {p.parts[:d] for p in self.placeholders for d in range(1, len(p.parts))}
        for parts in sorted(ancestors, key=len, reverse=True):
            path = self.upper.joinpath(*parts)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode) or os.listdir(path) or is_opaque(path):
                continue
            if parts in created:
                _remove_keeping_parent_time(path)
                continue
            found = self.view.entry(parts)
            if found is not None and same_metadata(found[0], found[1], path, st):
                _remove_keeping_parent_time(path)  # copied up for the mount point only


def _remove_keeping_parent_time(path: Path) -> None:
    parent_st = os.lstat(path.parent)
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink()
    os.utime(path.parent, ns=(parent_st.st_atime_ns, parent_st.st_mtime_ns), follow_symlinks=False)


def normalise_upper(upper: Path) -> None:
    """Make an upper dir a plain layer dir: drop sockets and overlay's private xattrs (origin, impure, ...),
    keep only opaque=y (in this namespace's xattr namespace), and give each whiteout its own inode (overlay links them all to one
    shared whiteout, which a tar writer would otherwise see as hardlinks)."""
    for root, dirnames, filenames in os.walk(upper):
        root_path = Path(root)
        root_st = os.lstat(root_path)
        changed_root = False
        for name in dirnames + filenames:
            path = root_path / name
            st = os.lstat(path)
            if stat.S_ISSOCK(st.st_mode):
                path.unlink()  # a socket a daemon left behind cannot go into a layer
                changed_root = True
                continue
            if is_whiteout(st):
                if st.st_nlink > 1:
                    path.unlink()
                    os.mknod(path, stat.S_IFCHR | 0o000, 0)
                    os.chown(path, st.st_uid, st.st_gid)
                    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
                    changed_root = True
                continue
            _clean_xattrs(path, is_dir=stat.S_ISDIR(st.st_mode))
        if changed_root:
            os.utime(root_path, ns=(root_st.st_atime_ns, root_st.st_mtime_ns))
    _clean_xattrs(upper, is_dir=True)


def _clean_xattrs(path: Path, *, is_dir: bool) -> None:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if not is_overlay_xattr(name):
            continue
        if name == opaque_xattr() and is_dir:
            value = os.getxattr(path, name, follow_symlinks=False)
            if value == b"y":
                continue
            # 'x' marks a dir holding xattr whiteouts (not opaque): not part of a layer.
        os.removexattr(path, name, follow_symlinks=False)
