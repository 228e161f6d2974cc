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

from builder.image.blobfiles import open_lock_file
from builder.image.store import Store

# Builds hold this lock shared for their whole run; a prune that takes it exclusively knows no
# build is between writing a blob and referencing it, so it may collect everything unreferenced.
_BUILDS_LOCK = "builds"


def _lock_path(store: Store, name: str) -> Path:
    return Path(store.root) / "locks" / name


@contextmanager
def _locked(store: Store, name: str, operation: int) -> Iterator[bool]:
    """Holds flock `operation` on locks/<name> for the block; yields False if LOCK_NB found it busy."""
    path = _lock_path(store, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@contextmanager
def hold_image(store: Store, manifest_digest: str) -> Iterator[None]:
    """Mark an image as in use (by a build) while the block runs; see the module docstring."""
    with _locked(store, manifest_digest, fcntl.LOCK_SH):
        yield


def image_in_use(store: Store, manifest_digest: str) -> bool:
    if not _lock_path(store, manifest_digest).exists():
        return False
    with _locked(store, manifest_digest, fcntl.LOCK_EX | fcntl.LOCK_NB) as free:
        return not free


@contextmanager
def hold_store_for_build(store: Store) -> Iterator[None]:
    with _locked(store, _BUILDS_LOCK, fcntl.LOCK_SH):
        yield


@contextmanager
def no_build_running(store: Store) -> Iterator[bool]:
    """Yields True while holding off new builds when none is running now, else False at once."""
    with _locked(store, _BUILDS_LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB) as alone:
        yield alone
