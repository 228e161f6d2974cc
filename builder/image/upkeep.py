"""Upkeep of the store: garbage collection and the consistency check.

Both walk the store by dir fds opened without following links, so a link planted anywhere in
the store never makes them delete or read outside it.
"""
from __future__ import annotations

import fcntl
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import ArchiveError, StoreError
from builder.image import oci
from builder.image.blobfiles import (
    HashingReader,
    check_store_entry,
    open_dir_nofollow,
    open_store_dir,
    remove_tree_at,
    store_dir,
)
from builder.image.content import BlobStore
from builder.image.index import StoreIndex
from builder.image.lazy import LazyLayers
from builder.image.records import ImageRecords
from builder.image.snapshots import Lock, SnapshotStore, snapshot_lock_name

_DIGEST_IN_TEXT = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass
class GCResult:
    removed_blobs: list[str] = field(default_factory=list)
    removed_snapshots: list[str] = field(default_factory=list)
    removed_tmp: list[str] = field(default_factory=list)
    freed_bytes: int = 0




class Upkeep:
    def __init__(self, root: Path, index: StoreIndex, blobs: BlobStore, records: ImageRecords,
                 snapshots: SnapshotStore, lock: Lock, store_dirs: tuple[str, ...],
                 lazy: LazyLayers | None = None) -> None:
        self.root = root
        self.index = index
        self.blobs = blobs
        self.records = records
        self.snapshots = snapshots
        self.lock = lock
        self.store_dirs = store_dirs
        self.lazy = lazy

    def _live_digests(self) -> tuple[set[str], set[str]]:
        """(blob digests, diff_ids) reachable from image records and step-cache values."""
        blobs: set[str] = set()
        diff_ids: set[str] = set()
        db = self.index.db()
        for manifest_digest, config_digest in db.execute("SELECT manifest_digest, config_digest FROM images"):
            blobs.update((manifest_digest, config_digest))
            try:
                manifest = self.blobs.read_json(manifest_digest)
                blobs.update(layer.digest for layer in oci.manifest_layers(manifest))
                diff_ids.update(oci.config_diff_ids(self.blobs.read_json(config_digest)))
            except StoreError:
                continue
        for (value,) in db.execute("SELECT value FROM cache"):
            # Cache values are the solver's JSON; any digest mentioned in one is kept alive.
            found = set(_DIGEST_IN_TEXT.findall(value))
            blobs |= found
            diff_ids |= found
        # A live layer keeps every blob known to hold it: a cache entry naming its diff_id, and the
        # compressed forms exports and pushes made of it (kept so the next one is free).
        for blob_digest, diff_id in db.execute("SELECT blob_digest, diff_id FROM layers").fetchall():
            if diff_id in blobs or diff_id in diff_ids:
                blobs.add(blob_digest)
        return blobs, diff_ids

    def gc(self, *, min_age: float = 3600.0, dry_run: bool = False) -> GCResult:
        """Remove blobs and snapshots no image or cache entry references, and stale temp files.

        `min_age` protects what builds running right now wrote but have not referenced yet.
        Walks by dir fds without following links (a link in the store is removed, never followed);
        a store dir replaced by a link raises StoreError before anything is removed from it."""
        result = GCResult()
        now = time.time()
        live_blobs, live_diff_ids = self._live_digests()
        with store_dir(self.root, "blobs/sha256") as blobs_fd:
            for name in sorted(os.listdir(blobs_fd)):
                digest = "sha256:" + name
                if digest in live_blobs:
                    continue
                try:
                    st = os.stat(name, dir_fd=blobs_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode) or now - st.st_mtime < min_age:
                    continue  # a dir is never a blob: left for fsck to report
                result.removed_blobs.append(digest)
                result.freed_bytes += st.st_size if stat.S_ISREG(st.st_mode) else 0
                if not dry_run:
                    try:
                        os.unlink(name, dir_fd=blobs_fd)
                    except FileNotFoundError:
                        pass
        if not dry_run and self.lazy is not None:
            # Where an unreferenced lazy layer could be fetched is of no use any more (min_age
            # spares what a running build noted but has not referenced yet).
            rows = self.index.db().execute("SELECT blob_digest, created FROM lazy_layers").fetchall()
            self.lazy.forget([digest for digest, created in rows if digest not in live_blobs and now - created >= min_age])
        if not dry_run and result.removed_blobs:
            with self.index.tx() as tx:
                tx.executemany("DELETE FROM layers WHERE blob_digest=?", [(d,) for d in result.removed_blobs])
                tx.executemany("DELETE FROM variants WHERE blob_digest=?", [(d,) for d in result.removed_blobs])
        rows = self.index.db().execute("SELECT n, diff_id, last_used FROM snapshots").fetchall()
        with store_dir(self.root, "s") as snapshots_fd, store_dir(self.root, "tmp") as tmp_fd:
            for n, diff_id, last_used in rows:
                if diff_id in live_diff_ids or now - last_used < min_age:
                    continue
                result.removed_snapshots.append(diff_id)
                if dry_run:
                    continue
                with self.lock(snapshot_lock_name(diff_id)):
                    trash = self._move_to_trash(snapshots_fd, str(n), tmp_fd)
                    with self.index.tx() as tx:
                        tx.execute("DELETE FROM snapshots WHERE n=?", (n,))
                        # A layer made here had its snapshot as its only content: it is gone now.
                        tx.execute("DELETE FROM diffs WHERE diff_id=? AND from_dir=1", (diff_id,))
                    if trash is not None:
                        remove_tree_at(tmp_fd, trash)
            result.removed_tmp = self._clean_tmp(tmp_fd, dry_run=dry_run)
        return result

    @staticmethod
    def _move_to_trash(dir_fd: int, name: str, tmp_fd: int) -> str | None:
        """Move entry `name` into a fresh tmp/del-* dir (a kill then leaves a row without dir,
        re-unpacked on use); returns that dir's name, None when there was no entry."""
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        while True:
            trash = "del-" + os.urandom(8).hex()
            try:
                os.mkdir(trash, 0o700, dir_fd=tmp_fd)
                break
            except FileExistsError:
                continue
        trash_fd = open_dir_nofollow(trash, tmp_fd)
        try:
            os.rename(name, "d", src_dir_fd=dir_fd, dst_dir_fd=trash_fd)
        except FileNotFoundError:
            pass
        finally:
            os.close(trash_fd)
        return trash

    def _clean_tmp(self, tmp_fd: int, *, dry_run: bool, min_age: float = 60.0) -> list[str]:
        """Remove temp entries whose writer is gone (we can take their flock)."""
        removed = []
        now = time.time()
        for name in sorted(os.listdir(tmp_fd)):
            try:
                st = os.stat(name, dir_fd=tmp_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if now - st.st_mtime < min_age:
                continue
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                # Nothing the builder makes (a link, a fifo, a device): removed without opening it.
                removed.append(name)
                if not dry_run:
                    remove_tree_at(tmp_fd, name)
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=tmp_fd)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process is writing it
                removed.append(name)
                if not dry_run:
                    remove_tree_at(tmp_fd, name)
            finally:
                os.close(fd)
        return removed

    def fsck(self) -> list[str]:
        """Check the store; returns one line per problem (empty when healthy).

        Re-hashes every blob, and the uncompressed content of every layer blob (in the same read)
        against the diff_id the `layers` table and the images' configs say it has."""
        problems: list[str] = []
        for sub in self.store_dirs:
            try:
                check_store_entry(self.root, sub, directory=True)
            except StoreError as exc:
                problems.append(exc.message)
        db = self.index.db()
        recorded: dict[str, str] = dict(db.execute("SELECT blob_digest, diff_id FROM layers").fetchall())
        images = db.execute("SELECT manifest_digest, config_digest FROM images").fetchall()
        parsed: dict[str, tuple[oci.Descriptor, list[oci.Descriptor]] | str] = {}
        for manifest_digest, _ in images:
            try:
                manifest = self.blobs.read_json(manifest_digest)
                parsed[manifest_digest] = (oci.manifest_config(manifest), oci.manifest_layers(manifest))
            except (StoreError, KeyError, ValueError, TypeError) as exc:
                parsed[manifest_digest] = getattr(exc, "message", None) or str(exc)
        layer_digests = set(recorded)
        for entry in parsed.values():
            if not isinstance(entry, str):
                layer_digests.update(layer.digest for layer in entry[1])
        present, uncompressed = self._fsck_blobs(layer_digests, problems)
        for blob_digest, diff_id in sorted(recorded.items()):
            if blob_digest not in present:
                continue
            actual = uncompressed.get(blob_digest)
            if isinstance(actual, Exception):
                problems.append(f"layer blob {blob_digest} (recorded with diff_id {diff_id}) does not "
                                f"decompress: {actual}")
            elif actual != diff_id:
                problems.append(f"layer blob {blob_digest}: recorded diff_id {diff_id}, but its "
                                f"uncompressed content hashes to {actual}")
        image_digests = set()
        made_here_checked: dict[str, str | None] = {}
        for manifest_digest, config_digest in images:
            image_digests.add(manifest_digest)
            if manifest_digest not in present:
                problems.append(f"image {manifest_digest}: manifest blob missing")
                continue
            entry = parsed[manifest_digest]
            if isinstance(entry, str):
                problems.append(f"image {manifest_digest}: manifest unreadable: {entry}")
                continue
            declared, layers = entry[0].digest, entry[1]
            if declared != config_digest:
                problems.append(f"image {manifest_digest}: config {declared} differs from recorded {config_digest}")
            diff_ids: list[str] = []
            if config_digest not in present:
                problems.append(f"image {manifest_digest}: config blob {config_digest} missing")
            else:
                try:
                    diff_ids = oci.config_diff_ids(self.blobs.read_json(config_digest))
                    if len(diff_ids) != len(layers):
                        problems.append(f"image {manifest_digest}: {len(layers)} layers but {len(diff_ids)} diff_ids")
                except StoreError as exc:
                    problems.append(f"image {manifest_digest}: config unreadable: {exc.message}")
            for index, layer in enumerate(layers):
                if layer.digest not in present and self.lazy is not None and self.lazy.get(layer.digest):
                    continue  # a layer still in the cache it came from: checked when fetched
                if layer.digest not in present:
                    problem = self._check_made_here(layer.digest, made_here_checked)
                    if problem:
                        problems.append(f"image {manifest_digest}: {problem}")
                    continue
                actual = uncompressed.get(layer.digest)
                claimed = diff_ids[index] if index < len(diff_ids) else None
                if claimed is not None and isinstance(actual, str) and actual != claimed:
                    problems.append(f"image {manifest_digest}: layer {layer.digest}: the config claims diff_id "
                                    f"{claimed}, but its uncompressed content hashes to {actual}")
                elif isinstance(actual, Exception) and layer.digest not in recorded:
                    problems.append(f"image {manifest_digest}: layer {layer.digest} does not decompress: {actual}")
        for name, manifest_digest in self.records.tags():
            if manifest_digest not in image_digests:
                problems.append(f"tag {name} points to unknown image {manifest_digest}")
        numbers = {str(n) for (n,) in db.execute("SELECT n FROM snapshots")}
        try:
            with store_dir(self.root, "s") as snapshots_fd:
                for name in sorted(os.listdir(snapshots_fd)):
                    if name not in numbers:
                        problems.append(f"snapshot dir s/{name} has no index entry")
                    elif not stat.S_ISDIR(os.stat(name, dir_fd=snapshots_fd, follow_symlinks=False).st_mode):
                        problems.append(f"snapshot s/{name} is not a directory (a symbolic link or a file)")
        except StoreError:
            pass  # reported above
        return problems

    def _check_made_here(self, digest: str, checked: dict[str, str | None]) -> str | None:
        """A layer with no blob must be one the builder made: its snapshot dir, written as a tar
        again, must hash to its digest (its diff_id). None when it does."""
        if digest in checked:
            return checked[digest]
        info = self.blobs.diff(digest)
        if info is None or not info.from_dir or not self.snapshots.has_snapshot(digest):
            checked[digest] = f"layer blob {digest} missing (and no snapshot the builder made holds it)"
            return checked[digest]
        from builder.layer.compress import NullSink
        from builder.layer.tarwrite import write_layer

        try:
            actual = write_layer(self.snapshots.snapshot_dir(digest), NullSink(), compression="uncompressed",
                                 source_date_epoch=info.epoch).diff_id
        except (OSError, ArchiveError) as exc:
            actual = f"an unreadable tree ({exc})"
        checked[digest] = (None if actual == digest else
                           f"layer {digest}: its snapshot dir now writes a tar hashing to {actual}")
        return checked[digest]

    def _fsck_blobs(self, layer_digests: set[str], problems: list[str]) -> tuple[set[str], dict[str, str | Exception]]:
        """Hash every blob (and a layer's uncompressed stream in the same read); returns the
        digests present and intact, and the uncompressed digest (or the error) of each layer."""
        from builder.layer.decompress import open_layer_stream

        present: set[str] = set()
        uncompressed: dict[str, str | Exception] = {}
        try:
            blobs_fd = open_store_dir(self.root, "blobs/sha256")
        except StoreError:
            return present, uncompressed  # reported with the dir checks
        except OSError as exc:
            problems.append(f"cannot read blobs/sha256: {exc.strerror}")
            return present, uncompressed
        try:
            for name in sorted(os.listdir(blobs_fd)):
                digest = "sha256:" + name
                try:
                    st = os.stat(name, dir_fd=blobs_fd, follow_symlinks=False)
                    # Only a regular file is opened (never a link, a fifo or a device node).
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                 dir_fd=blobs_fd) if stat.S_ISREG(st.st_mode) else -1
                except OSError:
                    fd = -1
                if fd < 0 or not oci.is_digest(digest):
                    if fd >= 0:
                        os.close(fd)
                    problems.append(f"stray entry in blobs/sha256: {name}")
                    continue
                with os.fdopen(fd, "rb") as f:
                    raw = HashingReader(f)
                    if digest in layer_digests:
                        try:
                            stream = HashingReader(open_layer_stream(raw))
                            stream.drain()
                            uncompressed[digest] = stream.digest()
                        except ArchiveError as exc:
                            uncompressed[digest] = exc
                    raw.drain()
                if raw.digest() != digest:
                    problems.append(f"blob {digest} is corrupt (content hashes to {raw.digest()})")
                    uncompressed.pop(digest, None)
                present.add(digest)
        finally:
            os.close(blobs_fd)
        return present, uncompressed
