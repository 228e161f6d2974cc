"""Unpacked layers (`s/<n>`, short names because they become overlay lowerdirs), one per diff_id,
in the overlay-upper format.

A snapshot's row (diff_id -> n) is inserted before its dir is renamed into `s/<n>`; the dir's
existence is the "complete" mark, and unpacking is serialised by a per-diff_id flock, so two
processes never both publish. A snapshot is only made from a blob whose uncompressed content
was hashed to its diff_id on the way in.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable

from builder.errors import StoreError
from builder.image.blobfiles import HashingReader, check_digest, fsync_dir, remove_tree, syncfs
from builder.image.content import BlobStore
from builder.image.index import StoreIndex

Lock = Callable[[str], AbstractContextManager[None]]


def snapshot_lock_name(diff_id: str) -> str:
    return "snap-" + diff_id.removeprefix("sha256:")


class SnapshotStore:
    def __init__(self, root: Path, index: StoreIndex, blobs: BlobStore, lock: Lock) -> None:
        self.snapshots_dir = root / "s"
        self.tmp_dir = root / "tmp"
        self.index = index
        self.blobs = blobs
        self.lock = lock

    def _row(self, diff_id: str) -> int | None:
        row = self.index.db().execute("SELECT n FROM snapshots WHERE diff_id=?", (diff_id,)).fetchone()
        return None if row is None else int(row[0])

    def _claim_number(self, diff_id: str) -> int:
        now = time.time()
        with self.index.tx() as tx:
            tx.execute("INSERT OR IGNORE INTO snapshots(diff_id, created, last_used) VALUES (?,?,?)",
                       (diff_id, now, now))
            return int(tx.execute("SELECT n FROM snapshots WHERE diff_id=?", (diff_id,)).fetchone()[0])

    def _present(self, n: int) -> bool:
        """s/<n> exists as a real dir (a link there would lead an overlay lowerdir outside)."""
        try:
            return stat.S_ISDIR(os.lstat(self.snapshots_dir / str(n)).st_mode)
        except OSError:
            return False

    def has_snapshot(self, diff_id: str) -> bool:
        n = self._row(diff_id)
        return n is not None and self._present(n)

    def adopt_snapshot(self, diff_id: str, layer_dir: Path) -> bool:
        """Move `layer_dir` in as the snapshot of `diff_id`; False (dir left alone) when one exists
        already or the dir is on another file system."""
        check_digest(diff_id)
        with self.lock(snapshot_lock_name(diff_id)):
            if self.has_snapshot(diff_id):
                return False
            n = self._claim_number(diff_id)
            final = self.snapshots_dir / str(n)
            syncfs(layer_dir)
            try:
                os.rename(layer_dir, final)
            except OSError as exc:
                if exc.errno in (errno.EXDEV, errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
                    return False
                raise
            fsync_dir(self.snapshots_dir)
            return True

    def snapshot_dir(self, diff_id: str, blob_digest: str | None = None) -> Path:
        """The unpacked layer (overlay-upper format) for `diff_id`, unpacked once and shared."""
        check_digest(diff_id)
        row = self.index.db().execute("SELECT n, last_used FROM snapshots WHERE diff_id=?", (diff_id,)).fetchone()
        if row is not None and self._present(row[0]):
            if time.time() - row[1] > 600:  # coarse last-use mark, so gc's min_age spares dirs in use
                with self.index.tx() as tx:
                    tx.execute("UPDATE snapshots SET last_used=? WHERE n=?", (time.time(), row[0]))
            return self.snapshots_dir / str(row[0])
        with self.lock(snapshot_lock_name(diff_id)):
            n = self._row(diff_id)
            if n is not None and self._present(n):
                return self.snapshots_dir / str(n)
            if blob_digest is None or not self.blobs.has_blob(blob_digest):
                known = self.blobs.layer_blobs(diff_id)
                if not known:
                    raise StoreError(f"layer {diff_id} is gone from the store: no snapshot dir and no blob holds it",
                                     hint="pull or build the image again (and run fsck on the store)")
                blob_digest = known[0][0]
            n = self._claim_number(diff_id)
            final = self.snapshots_dir / str(n)
            work = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="snap-"))
            fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.chmod(work, 0o755)
                self._unpack_verified(blob_digest, diff_id, work)
                syncfs(work)
                os.rename(work, final)
                fsync_dir(self.snapshots_dir)
            except BaseException:
                remove_tree(work)
                raise
            finally:
                os.close(fd)
            return final

    def _unpack_verified(self, blob_digest: str, diff_id: str, dest: Path) -> None:
        """Unpack a layer blob into `dest`, checking the uncompressed bytes hash to `diff_id`."""
        from builder.layer.decompress import open_layer_stream
        from builder.layer.extract import unpack_layer

        with self.blobs.open_blob(blob_digest) as raw:
            stream = HashingReader(open_layer_stream(raw))
            unpack_layer(stream, dest)
            stream.drain()
        if stream.digest() != diff_id:
            raise StoreError(f"layer blob {blob_digest} unpacks to {stream.digest()}, not {diff_id}",
                             hint="the store is corrupt; run fsck and remove the image")
        self.blobs.note_layer(blob_digest, diff_id, stream.size)
