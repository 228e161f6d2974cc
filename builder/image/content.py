"""Content-addressed blobs (`blobs/sha256/<hex>`) and what the builder learnt by hashing them:
the diff_id of each layer blob (`layers` table).

A blob becomes visible only complete: written to tmp/, fsynced, renamed to its digest's name;
two writers of the same content both succeed. A blob -> diff_id pair is recorded only after the
builder hashed that blob's uncompressed stream itself, never because a config says so.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from builder.errors import ArchiveError, StoreError
from builder.image import oci
from builder.image.blobfiles import BlobWriter, HashingReader, check_digest, copy_into, fsync_dir
from builder.image.index import StoreIndex

# A layer blob and its diff_id; a row that would not change is not written again (a no-op
# rebuild commits nothing).
RECORD_LAYER_SQL = ("INSERT INTO layers(blob_digest, diff_id, media_type, size) VALUES (?,?,?,?) "
                    "ON CONFLICT(blob_digest) DO UPDATE SET diff_id=excluded.diff_id "
                    "WHERE layers.diff_id IS NOT excluded.diff_id")


class BlobStore:
    def __init__(self, root: Path, index: StoreIndex) -> None:
        self.root = root
        self.blobs_dir = root / "blobs" / "sha256"
        self.tmp_dir = root / "tmp"
        self.index = index
        # blob digest -> (diff_id, uncompressed size or None) for layer blobs this process hashed
        # while writing or unpacking them; saved into `layers` when an image that uses them is saved.
        self._hashed_layers: dict[str, tuple[str, int | None]] = {}
        self._hashed_lock = threading.Lock()

    # --- blobs ---

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / check_digest(digest).removeprefix("sha256:")

    def has_blob(self, digest: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self.blob_path(digest)).st_mode)
        except OSError:
            return False

    @contextmanager
    def blob_writer(self, expected_digest: str | None = None, *, layer: bool = False) -> Iterator[BlobWriter]:
        """A temp file published under its digest on success; `layer=True` also learns the
        blob's diff_id on the way (see `layer_diff_id`)."""
        if expected_digest is not None:
            check_digest(expected_digest)
        writer = BlobWriter(self.tmp_dir, expected_digest, layer=layer)
        try:
            yield writer
            writer.finish()
            self.publish(writer)
        except BaseException:
            writer.discard()
            raise
        fsync_dir(self.blobs_dir)

    def staging(self) -> "StagingContext":
        """`with blobs.staging() as st:` write blobs with st.blob_writer(); st.publish() makes them visible."""
        return StagingContext(self)

    def publish(self, writer: BlobWriter) -> None:
        """Rename a finished writer's temp file to its digest's name (the caller fsyncs the dir)."""
        assert writer.digest is not None
        final = self.blobs_dir / writer.digest.removeprefix("sha256:")
        writer.release()
        if writer.diff_id is not None:
            self.note_layer(writer.digest, writer.diff_id, writer.diff_size)
        if final.exists():
            # Same content is already there (another build wrote it): keep the existing file, and
            # refresh its mtime so gc's min_age protects it until our image references it.
            writer.temp_path.unlink(missing_ok=True)
            try:
                os.utime(final)
            except FileNotFoundError:  # gc removed it just now
                raise StoreError(f"blob {writer.digest} was removed by a concurrent prune while being written",
                                 hint="run the command again") from None
        else:
            os.chmod(writer.temp_path, 0o444)
            os.rename(writer.temp_path, final)

    def put_blob(self, data: bytes | BinaryIO | Iterable[bytes], expected_digest: str | None = None) -> tuple[str, int]:
        if expected_digest is not None and self.has_blob(expected_digest):
            # Nothing to write: the content is addressed by its digest, so it is the same. The
            # mtime is refreshed so gc's min_age protects it until an image references it.
            path = self.blob_path(expected_digest)
            try:
                os.utime(path)
                return expected_digest, path.stat().st_size
            except FileNotFoundError:
                pass  # pruned just now: write it again below
        with self.blob_writer(expected_digest) as writer:
            copy_into(data, writer)
        assert writer.digest is not None
        return writer.digest, writer.size

    def put_json(self, obj: Any) -> tuple[str, int]:
        return self.put_blob(oci.canonical_json(obj))

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            fd = os.open(self.blob_path(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store at {self.root}",
                             hint="run fsck on the store; the image may need to be pulled or built again") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # blobs are only ever made by renaming a regular file
                raise StoreError(f"blob {digest} in the store at {self.root} is a symbolic link",
                                 hint="someone tampered with the store; run fsck and remove the entry") from None
            raise StoreError(f"cannot read blob {digest} in the store at {self.root}: {exc.strerror}") from exc
        return os.fdopen(fd, "rb")

    def read_blob(self, digest: str) -> bytes:
        with self.open_blob(digest) as f:
            return f.read()

    def read_json(self, digest: str) -> dict:
        data = self.read_blob(digest)
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"blob {digest} is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise StoreError(f"blob {digest} is JSON but not an object")
        return obj

    # --- what hashing taught us about layer blobs ---

    def record_layer(self, diff_id: str, blob_digest: str, media_type: str, size: int) -> None:
        """Remember that `blob_digest` is a (compressed) tar whose uncompressed digest is `diff_id`.

        Only for a pair the builder hashed itself (write_layer hashes the tar it writes)."""
        check_digest(diff_id)
        check_digest(blob_digest)
        with self.index.tx() as tx:
            tx.execute(RECORD_LAYER_SQL, (blob_digest, diff_id, media_type, size))

    def note_layer(self, blob_digest: str, diff_id: str, size: int | None = None) -> None:
        """Remember a pair this process hashed (recorded when an image that uses it is saved)."""
        with self._hashed_lock:
            self._hashed_layers[blob_digest] = (diff_id, size)

    def learnt_size(self, blob_digest: str) -> int | None:
        """The uncompressed size of a layer blob this process hashed, if it counted it."""
        with self._hashed_lock:
            known = self._hashed_layers.get(blob_digest)
        return None if known is None else known[1]

    def layer_diff_id(self, blob_digest: str) -> str:
        """The diff_id of a stored layer blob as the builder itself hashed it: learnt while this
        process wrote or unpacked the blob, else from the `layers` table (written only after
        hashing), else by reading the blob once now. Never what a config claims."""
        check_digest(blob_digest)
        with self._hashed_lock:
            known = self._hashed_layers.get(blob_digest)
        if known is not None:
            return known[0]
        row = self.index.db().execute("SELECT diff_id FROM layers WHERE blob_digest=?", (blob_digest,)).fetchone()
        if row is not None:
            return row[0]
        from builder.layer.decompress import open_layer_stream

        try:
            with self.open_blob(blob_digest) as raw:
                stream = HashingReader(open_layer_stream(raw))
                stream.drain()
        except ArchiveError as exc:
            raise StoreError(f"layer blob {blob_digest} is not a readable layer: {exc.message}",
                             hint="the image is corrupt; remove it and pull or load it again") from exc
        except OSError as exc:
            raise StoreError(f"cannot read layer blob {blob_digest}: {exc}") from exc
        self.note_layer(blob_digest, stream.digest(), stream.size)
        return stream.digest()

    def layer_blobs(self, diff_id: str) -> list[tuple[str, str, int]]:
        """(blob digest, media type, size) of every stored blob known (by hashing) to hold this diff_id."""
        rows = self.index.db().execute(
            "SELECT blob_digest, media_type, size FROM layers WHERE diff_id=? ORDER BY blob_digest", (diff_id,)
        ).fetchall()
        return [(d, m, s) for d, m, s in rows if self.has_blob(d)]


    # --- uncompressed layers, and their compressed forms ---

    def record_diff(self, diff_id: str, size: int, *, from_dir: bool, epoch: int | None = None) -> None:
        """What the builder learnt of an uncompressed layer: its size, and, when it wrote the tar
        itself from a snapshot dir, the epoch it wrote it with (so it can write the same again)."""
        check_digest(diff_id)
        with self.index.tx() as tx:
            if from_dir:
                tx.execute("INSERT INTO diffs(diff_id, size, from_dir, epoch) VALUES (?,?,1,?) "
                           "ON CONFLICT(diff_id) DO UPDATE SET from_dir=1, epoch=excluded.epoch "
                           "WHERE diffs.from_dir=0", (diff_id, size, epoch))
            else:
                tx.execute("INSERT OR IGNORE INTO diffs(diff_id, size, from_dir, epoch) VALUES (?,?,0,NULL)",
                           (diff_id, size))

    def record_signature(self, diff_id: str, signature: str) -> None:
        """The signature (builder.layer.treesig) the snapshot dir of a layer made here had when
        the builder hashed its tar to `diff_id`."""
        with self.index.tx() as tx:
            tx.execute("UPDATE diffs SET signature=? WHERE diff_id=? AND from_dir=1", (signature, diff_id))

    def diff(self, diff_id: str) -> DiffInfo | None:
        row = self.index.db().execute("SELECT size, from_dir, epoch, signature FROM diffs WHERE diff_id=?",
                                      (diff_id,)).fetchone()
        return None if row is None else DiffInfo(int(row[0]), bool(row[1]), row[2], row[3])

    def record_variant(self, diff_id: str, compression: str, level: int, blob_digest: str, size: int) -> None:
        with self.index.tx() as tx:
            tx.execute("INSERT OR REPLACE INTO variants(diff_id, compression, level, blob_digest, size) "
                       "VALUES (?,?,?,?,?)", (diff_id, compression, level, blob_digest, size))

    def variant(self, diff_id: str, compression: str, level: int) -> tuple[str, int] | None:
        """(blob digest, size) of the layer compressed so, when made before and still stored."""
        row = self.index.db().execute(
            "SELECT blob_digest, size FROM variants WHERE diff_id=? AND compression=? AND level=?",
            (diff_id, compression, level)).fetchone()
        if row is None or not self.has_blob(row[0]):
            return None
        return row[0], int(row[1])


@dataclass(frozen=True)
class DiffInfo:
    size: int  # bytes of the uncompressed tar
    from_dir: bool  # written by the builder from its snapshot dir (which is then its only copy)
    epoch: int | None  # the SOURCE_DATE_EPOCH that writing used
    signature: str | None = None  # from_dir: the dir's signature when its tar hashed to diff_id


class Staging:
    """Blobs written but not yet visible; `publish()` renames them all into place at once.

    Used by importers: an archive is verified completely before any of its blobs appears.
    """

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs
        self._pending: list[BlobWriter] = []

    @contextmanager
    def blob_writer(self, expected_digest: str | None = None, *, layer: bool = False) -> Iterator[BlobWriter]:
        writer = BlobWriter(self._blobs.tmp_dir, expected_digest, layer=layer)
        try:
            yield writer
            writer.finish()
        except BaseException:
            writer.discard()
            raise
        self._pending.append(writer)

    def put_blob(self, data: bytes | BinaryIO | Iterable[bytes], expected_digest: str | None = None) -> tuple[str, int]:
        with self.blob_writer(expected_digest) as writer:
            copy_into(data, writer)
        assert writer.digest is not None
        return writer.digest, writer.size

    def path_of(self, digest: str) -> Path:
        """Where a staged (or already published) blob can be read before publish."""
        for writer in self._pending:
            if writer.digest == digest:
                return writer.temp_path
        return self._blobs.blob_path(digest)

    def publish(self) -> None:
        for writer in self._pending:
            self._blobs.publish(writer)
        if self._pending:
            fsync_dir(self._blobs.blobs_dir)
        self._pending.clear()

    def discard(self) -> None:
        for writer in self._pending:
            writer.discard()
        self._pending.clear()


class StagingContext:
    def __init__(self, blobs: BlobStore) -> None:
        self._staging = Staging(blobs)

    def __enter__(self) -> Staging:
        return self._staging

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        # Anything not published (error, or the caller never called publish) is thrown away.
        self._staging.discard()
