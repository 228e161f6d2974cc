"""The "in use" marker: an image a running build needs must not be deleted under it.

A holder keeps a shared flock on `<store root>/locks/<manifest digest>`; `rmi` and `image prune`
refuse to delete an image whose lock file someone else holds, unless forced. The lock dies with
its holder, so a killed build never leaves an image stuck "in use".
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from builder.image.store import Store


def _lock_path(store: Store, manifest_digest: str) -> Path:
    return Path(store.root) / "locks" / manifest_digest


@contextmanager
def hold_image(store: Store, manifest_digest: str) -> Iterator[None]:
    """Mark an image as in use (by a build) while the block runs; see the module docstring."""
    path = _lock_path(store, manifest_digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def image_in_use(store: Store, manifest_digest: str) -> bool:
    path = _lock_path(store, manifest_digest)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our probe lock too
    return False


# Builds hold this lock shared for their whole run; a prune that takes it exclusively knows no
# build is between writing a blob and referencing it, so it may collect everything unreferenced.
_BUILDS_LOCK = "builds"


@contextmanager
def hold_store_for_build(store: Store) -> Iterator[None]:
    path = Path(store.root) / "locks" / _BUILDS_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextmanager
def no_build_running(store: Store) -> Iterator[bool]:
    """Yields True while holding off new builds when none is running now, else False at once."""
    path = Path(store.root) / "locks" / _BUILDS_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
