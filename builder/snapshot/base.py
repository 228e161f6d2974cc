"""What every snapshotter gives the sandbox: a rootfs to present, mount points, and a diff.

Mount points the sandbox needs (/proc, /dev, /sys, /etc/hosts, RUN --mount targets, ...) may be
missing from an image. They are created before the command runs. Most are remembered, so that
the diff leaves them (and the parent dirs made for them) out when the command did not touch
them, as BuildKit's mount stub cleaner does: an injected file never shows up in a layer. The
"kept" ones are the runtime's own mount points (/proc, /dev, /sys), which runc creates and
BuildKit leaves in the layer as empty directories; they stay too.
"""
from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from builder.errors import SandboxError
from builder.snapshot.view import LayeredView, copy_metadata, image_xattrs, is_opaque

CLOCK_REALTIME_COARSE = getattr(time, "CLOCK_REALTIME_COARSE", 5)


@dataclass(frozen=True)
class OverlayMount:
    """How init mounts the overlay: chdir to `cwd` first so lowerdirs can be short and relative."""

    cwd: str
    options: str
    target: str


@dataclass
class Placeholder:
    """A mount point created because the image lacked it."""

    parts: tuple[str, ...]
    is_dir: bool
    # Ancestors that did not exist in the image and were created for it (outermost first).
    created_dirs: list[tuple[str, ...]] = field(default_factory=list)


def coarse_clock_after(t0_ns: int) -> None:
    """Wait until the kernel's coarse clock (used for ctime) is past `t0_ns`, so every change
    made from now on gets a ctime above t0 (at most one clock tick)."""
    deadline = time.monotonic() + 0.1
    while time.clock_gettime_ns(CLOCK_REALTIME_COARSE) <= t0_ns and time.monotonic() < deadline:
        time.sleep(0.001)


class ActiveSnapshot:
    """A writable rootfs over `lower_dirs` for one RUN; subclasses say how it is presented."""

    kind: str = "?"

    def __init__(self, lower_dirs: Sequence[Path], work_dir: Path) -> None:
        self.lower_dirs = [Path(d) for d in lower_dirs]
        self.work_dir = Path(work_dir)
        self.view = LayeredView(self.lower_dirs)
        self.placeholders: list[Placeholder] = []
        self.kept: set[tuple[str, ...]] = set()  # mount points made to stay in the layer
        self.started_ns = time.time_ns()

    # -- what the sandbox uses ---------------------------------------------------------------

    @property
    def rootfs(self) -> Path:
        """The host directory that is (or, for overlay, becomes inside the sandbox) the rootfs."""
        raise NotImplementedError

    @property
    def overlay(self) -> OverlayMount | None:
        """The overlay to mount inside the sandbox, or None if `rootfs` is a ready directory."""
        return None

    @property
    def write_base(self) -> Path:
        """The host directory where new entries of the rootfs land (upper dir or the copy)."""
        raise NotImplementedError

    def ensure_mount_points(self, files: Sequence[str] = (), dirs: Sequence[str] = (),
                            kept_dirs: Sequence[str] = ()) -> dict[str, str]:
        """Make sure each in-image path exists with the right type; returns path -> canonical
        in-image path to mount on. A path whose image entry has the wrong type (e.g. a dir where
        a file is wanted) or lies under a non-directory is left out. `kept_dirs` are made like
        `dirs` but stay in the diff even if the command leaves them empty."""
        result: dict[str, str] = {}
        # Kept dirs first: a mount point made under one (a --mount target in /sys) must find
        # it there already, or the dir would count as made for that mount point only.
        wanted = [(d, True, True) for d in kept_dirs]
        wanted += [(f, False, False) for f in files] + [(d, True, False) for d in dirs]
        for path, want_dir, keep in wanted:
            canonical = self.view.resolve(path, follow=True)
            if canonical is None:
                canonical = self._resolve_missing(path)
                if canonical is None:
                    continue
            parts = tuple(p for p in canonical.split("/") if p)
            if not parts:
                continue
            st = self.view.lookup(canonical)
            if st is not None:
                if stat.S_ISDIR(st.st_mode) == want_dir:
                    result[path] = canonical
                continue
            if parts in self.kept or any(p.parts == parts for p in self.placeholders):
                result[path] = canonical
                continue
            placeholder = self._create_placeholder(parts, want_dir)
            if placeholder is not None:
                if keep:
                    self.kept.add(parts)
                else:
                    self.placeholders.append(placeholder)
                result[path] = canonical
        # Everything the command does from here on has a ctime after this instant.
        self.started_ns = time.time_ns()
        coarse_clock_after(self.started_ns)
        return result

    def _resolve_missing(self, path: str) -> str | None:
        """Canonical path for a path whose parents are missing too: resolve the longest
        existing prefix in the view and append the rest literally."""
        parts = [p for p in path.split("/") if p and p != "."]
        for cut in range(len(parts), -1, -1):
            head = "/" + "/".join(parts[:cut])
            resolved = self.view.resolve(head, follow=True)
            if resolved is not None and (cut == 0 or self.view.is_dir(head)):
                rest = [p for p in parts[cut:] if p != ".."]
                return (resolved.rstrip("/") + "/" + "/".join(rest)) if rest else resolved
        return None

    def _create_placeholder(self, parts: tuple[str, ...], want_dir: bool) -> Placeholder | None:
        base = self.write_base
        placeholder = Placeholder(parts, want_dir)
        touched: list[tuple[Path, os.stat_result]] = []
        for depth in range(1, len(parts)):
            prefix = parts[:depth]
            found = self.view.entry(prefix)
            target = base.joinpath(*prefix)
            if found is None:
                if not os.path.lexists(target):
                    target.mkdir(mode=0o755)
                    os.chmod(target, 0o755)
                    placeholder.created_dirs.append(prefix)
                continue
            host, st = found
            if not stat.S_ISDIR(st.st_mode):
                return None
            if not os.path.lexists(target):
                # Copy the directory up by hand, as overlay would: same owner, mode, xattrs, times.
                target.mkdir()
                copy_metadata(host, target, st)
            touched.append((host, st))
        leaf = base.joinpath(*parts)
        if want_dir:
            leaf.mkdir(mode=0o755)
            os.chmod(leaf, 0o755)
        else:
            leaf.touch(mode=0o644)
            os.chmod(leaf, 0o644)
        # Creating entries moved the parents' mtimes: put the image's times back.
        self._restore_times(parts)
        return placeholder

    def _restore_times(self, parts: tuple[str, ...]) -> None:
        base = self.write_base
        for depth in range(len(parts) - 1, -1, -1):  # the root too
            prefix = parts[:depth]
            found = self.view.entry(prefix)
            target = base.joinpath(*prefix)
            if found is not None and os.path.isdir(target):
                st = found[1]
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def placeholder_leftovers(self) -> set[tuple[str, ...]]:
        """Placeholders (and dirs created for them) that are still untouched in the rootfs:
        an empty file or dir that is not opaque."""
        leftovers: set[tuple[str, ...]] = set()
        base = self.write_base
        for placeholder in self.placeholders:
            leaf = base.joinpath(*placeholder.parts)
            try:
                st = os.lstat(leaf)
            except FileNotFoundError:
                continue
            if placeholder.is_dir:
                if not stat.S_ISDIR(st.st_mode) or os.listdir(leaf) or is_opaque(leaf):
                    continue
            elif not stat.S_ISREG(st.st_mode) or st.st_size != 0:
                continue
            leftovers.add(placeholder.parts)
        return leftovers

    def created_dirs(self) -> list[tuple[str, ...]]:
        """Dirs created for placeholders, deepest first."""
        seen: set[tuple[str, ...]] = set()
        for placeholder in self.placeholders:
            seen.update(placeholder.created_dirs)
        return sorted(seen, key=len, reverse=True)

    # -- results -----------------------------------------------------------------------------

    def diff(self, dest: Path) -> None:
        """Write the changes the command made as a layer dir (overlay-upper format) at `dest`."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Remove the work dirs (never the lower layer dirs)."""
        remove_tree(self.work_dir)


def same_metadata(host_a: Path, st_a: os.stat_result, host_b: Path, st_b: os.stat_result) -> bool:
    """True if two entries agree on type, mode, owner, mtime and image xattrs."""
    return (
        st_a.st_mode == st_b.st_mode
        and st_a.st_uid == st_b.st_uid
        and st_a.st_gid == st_b.st_gid
        and st_a.st_mtime_ns == st_b.st_mtime_ns
        and image_xattrs(host_a) == image_xattrs(host_b)
    )


def remove_tree(path: Path) -> None:
    """rm -rf that also copes with dirs a command made unwritable (e.g. chmod 000)."""
    if not os.path.lexists(path):
        return

    def fix_and_retry(func, failed_path, _exc):  # noqa: ANN001
        parent = os.path.dirname(failed_path)
        try:
            os.chmod(parent, 0o700)
            if os.path.isdir(failed_path) and not os.path.islink(failed_path):
                os.chmod(failed_path, 0o700)
        except OSError:
            pass
        func(failed_path)

    try:
        shutil.rmtree(path, onerror=fix_and_retry)
    except OSError as exc:
        raise SandboxError(f"cannot remove work dir {path}: {exc}") from exc


def prepare_dest(dest: Path) -> None:
    """A diff destination must not exist yet or be an empty directory."""
    if dest.exists():
        if not dest.is_dir() or any(dest.iterdir()):
            raise SandboxError(f"diff destination {dest} exists and is not an empty directory")
        dest.rmdir()
    dest.parent.mkdir(parents=True, exist_ok=True)
