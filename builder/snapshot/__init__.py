"""Snapshotters: a writable rootfs over a stack of layer dirs for one RUN, and its diff.

    snap = prepare(layer_dirs, work_dir, kind="auto")   # "overlay", "copy" or "auto"
    ... builder.sandbox.run(snap, argv, ...) ...
    snap.diff(layer_dir)                                 # the changes, overlay-upper format
    snap.cleanup()

Both snapshotters give byte-identical layer dirs for the same command.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from builder.errors import SandboxError
from builder.snapshot.base import ActiveSnapshot, OverlayMount
from builder.snapshot.copy import CopySnapshot
from builder.snapshot.overlay import OverlaySnapshot, overlay_supported
from builder.snapshot.view import LayeredView, flatten
from builder.userns import in_user_namespace

KINDS = ("overlay", "copy", "auto")
MAX_OVERLAY_LAYERS = 500  # the kernel's OVL_MAX_STACK


def prepare(layer_dirs: Sequence[Path], work_dir: Path, kind: str = "auto") -> ActiveSnapshot:
    """A writable rootfs over `layer_dirs` (lowest first) using the empty private `work_dir`."""
    if kind not in KINDS:
        raise SandboxError(f"unknown snapshotter {kind!r}", hint="use overlay, copy or auto")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if any(work_dir.iterdir()):
        raise SandboxError(f"snapshot work dir {work_dir} is not empty")
    if kind == "auto":
        usable = len(layer_dirs) <= MAX_OVERLAY_LAYERS and overlay_supported(work_dir)
        kind = "overlay" if usable else "copy"
    if kind == "overlay" and len(layer_dirs) > MAX_OVERLAY_LAYERS:
        raise SandboxError(f"an overlay mount takes at most {MAX_OVERLAY_LAYERS} layers, the image has {len(layer_dirs)}",
                           hint="use --snapshotter=copy or squash the base image")
    if kind == "overlay" and not overlay_supported(work_dir):
        where = "in the builder's user namespace" if in_user_namespace() else "on this machine"
        raise SandboxError(f"--snapshotter=overlay: overlayfs cannot be mounted over {work_dir} {where}",
                           hint="use --snapshotter=copy (or auto, which falls back to it); a rootless overlay "
                                "needs Linux 5.11 or later and a file system overlayfs takes as upper dir")
    if kind == "overlay":
        return OverlaySnapshot(layer_dirs, work_dir)
    return CopySnapshot(layer_dirs, work_dir)


__all__ = [
    "ActiveSnapshot", "CopySnapshot", "LayeredView", "OverlayMount", "OverlaySnapshot",
    "flatten", "prepare",
]
