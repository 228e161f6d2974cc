"""The local image store: content-addressed blobs, image records, tags, layer snapshots, step cache.
(Blob temp files, staged publication and the fsync helpers live in blobfiles.py.)

Layout under `root`:

    blobs/sha256/<hex>   every blob (layers, configs, manifests), named by the sha256 of its bytes
    index.db             SQLite (WAL): images, tags, layer diff_id <-> blob, snapshots, step cache
    s/<n>                unpacked layers in overlay-upper format (short names: they become lowerdirs)
    tmp/                 in-progress writes, on the same file system so a rename publishes them
    locks/               flock files serialising the unpacking of one diff_id across processes

Who may reach it: the root is 0700 and must belong to the user (snapshot dirs hold setuid files
and device nodes as images ship them); the store's own dirs must be real dirs, and walks that
delete or read (gc, fsck, prune) go by dir fds opened with O_NOFOLLOW, so a link planted in the
store never leads outside it. See `prepare_root` in blobfiles.py.

What is trusted: a blob only under the sha256 of its bytes (hashed while written); a row of the
`layers` table (blob -> diff_id) only after the builder hashed that blob's uncompressed stream
itself (while writing it, while unpacking it, or by reading it once), never because a config
says so. Saving an image checks each diff_id its config claims against that.

Why it survives kills and concurrency:
- a blob is written to tmp/, fsynced, then renamed to its final name; readers never see a partial
  blob, and two writers of the same content both succeed (the second finds it already there);
- a snapshot's row (diff_id -> n) is inserted before its dir is renamed into `s/<n>`; the dir's
  existence is the "complete" mark, and unpacking is serialised by a per-diff_id flock, so two
  processes never both publish;
- every temp file/dir is flock'ed by its writer while in use; `gc` removes only the ones whose
  lock it can take (their writer is dead);
- SQLite in WAL mode with a busy timeout lets several builder processes share one store.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import sqlite3
import stat
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from builder.errors import ArchiveError, ImageNotFound, StoreError
from builder.image import oci
from builder.image.blobfiles import (
    BlobWriter,
    DiffIdMismatch,
    HashingReader,
    StagingContext,
    check_digest,
    check_store_entry,
    copy_into,
    default_root,
    fsync_dir,
    open_dir_nofollow,
    open_lock_file,
    open_store_dir,
    prepare_root,
    remove_tree,
    remove_tree_at,
    store_dir,
    syncfs,
)
from builder.image.reference import InvalidReference, normalize_tag, parse_reference

_DIGEST_IN_TEXT = re.compile(r"sha256:[0-9a-f]{64}")
_HEX_PREFIX = re.compile(r"^(?:sha256:)?[0-9a-f]{1,64}$")
# 2: rows of `layers` are only written after hashing; v1 rows (taken from configs) are dropped.
SCHEMA_VERSION = 2

# The store's own dirs (made on open), dirs other rooms make on demand, and its database files:
# none may be a link or another's.
_STORE_DIRS = ("blobs", "blobs/sha256", "s", "tmp", "locks")
_ON_DEMAND_DIRS = ("cache-mounts", "registry-sources")
_STORE_FILES = ("index.db", "index.db-wal", "index.db-shm", "statcache.db", "statcache.db-wal",
                "statcache.db-shm")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    manifest_digest TEXT PRIMARY KEY,
    config_digest   TEXT NOT NULL,
    created         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_config ON images(config_digest);
CREATE TABLE IF NOT EXISTS tags (
    name            TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    updated         REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layers (
    blob_digest TEXT PRIMARY KEY,
    diff_id     TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS layers_diff_id ON layers(diff_id);
CREATE TABLE IF NOT EXISTS snapshots (
    n         INTEGER PRIMARY KEY AUTOINCREMENT,
    diff_id   TEXT NOT NULL UNIQUE,
    created   REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cache (
    key       TEXT PRIMARY KEY,
    value     TEXT NOT NULL,
    created   REAL NOT NULL,
    last_used REAL NOT NULL
);
"""


@dataclass
class ImageRecord:
    manifest_digest: str
    manifest: dict
    config_digest: str
    config: dict
    tags: list[str] = field(default_factory=list)

    @property
    def image_id(self) -> str:
        """Docker's IMAGE ID: the config digest."""
        return self.config_digest

    @property
    def short_id(self) -> str:
        return self.config_digest.removeprefix("sha256:")[:12]


@dataclass
class GCResult:
    removed_blobs: list[str] = field(default_factory=list)
    removed_snapshots: list[str] = field(default_factory=list)
    removed_tmp: list[str] = field(default_factory=list)
    freed_bytes: int = 0


# --- the store -----------------------------------------------------------------------------------


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs" / "sha256"
        self.snapshots_dir = root / "s"
        self.tmp_dir = root / "tmp"
        self.locks_dir = root / "locks"
        self.db_path = root / "index.db"
        self._local = threading.local()
        # blob digest -> diff_id for layer blobs this process hashed while writing them; saved
        # into `layers` only when an image that uses them is saved.
        self._hashed_layers: dict[str, str] = {}
        self._hashed_lock = threading.Lock()

    @classmethod
    def open(cls, root: str | Path | None = None) -> "Store":
        path = Path(root) if root is not None else default_root()
        path = path.expanduser().absolute()
        prepare_root(path)
        for sub in _STORE_DIRS:
            if check_store_entry(path, sub, directory=True):
                continue
            try:
                os.mkdir(path / sub, 0o755)
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(f"cannot create the store at {path}: {exc.strerror}",
                                 hint="set BUILDER_ROOT to a writable directory") from exc
            check_store_entry(path, sub, directory=True)
        for sub in _ON_DEMAND_DIRS:
            check_store_entry(path, sub, directory=True)
        for name in _STORE_FILES:
            check_store_entry(path, name, directory=False)
        store = cls(path)
        store._init_db()
        return store

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # --- database ---

    def _db(self) -> sqlite3.Connection:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            try:
                conn = sqlite3.connect(self.db_path, timeout=60.0, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA busy_timeout=60000")
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the store index {self.db_path}: {exc}") from exc
            local.conn = conn
            local.pid = os.getpid()
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; IMMEDIATE takes the write lock up front so it never deadlocks."""
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot update the store index {self.db_path}: {exc}",
                             hint="another process may hold it locked for too long, or the disk is full") from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StoreError(f"cannot update the store index {self.db_path}: {exc}") from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise StoreError(f"cannot update the store index {self.db_path}: {exc}",
                             hint="the disk may be full") from exc

    def _init_db(self) -> None:
        conn = self._db()
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                with self._tx() as tx:
                    version = tx.execute("PRAGMA user_version").fetchone()[0]
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            tx.execute(statement)
                    if version == 1:
                        # v1 recorded the blob -> diff_id pairs configs claimed, unchecked: forget
                        # them; each is learnt again by hashing its blob when it is next needed.
                        tx.execute("DELETE FROM layers")
                    tx.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise StoreError(f"the store at {self.root} was created by a newer builder (schema {version})")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the store index {self.db_path} is unreadable: {exc}") from exc

    # --- locks and temp space ---

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive flock on `locks/<name>` held while the block runs (across processes)."""
        fd = open_lock_file(self.locks_dir / name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def tempdir(self, prefix: str = "work-") -> Iterator[Path]:
        """A scratch dir in tmp/ (same file system as the store), locked while in use, removed after."""
        path = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix=prefix))
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.chmod(path, 0o755)
            yield path
        finally:
            try:
                if path.exists():
                    remove_tree(path)
            finally:
                os.close(fd)

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
            self._publish(writer)
        except BaseException:
            writer.discard()
            raise
        fsync_dir(self.blobs_dir)

    def staging(self) -> "StagingContext":
        """`with store.staging() as st:` write blobs with st.blob_writer(); st.publish() makes them visible."""
        return StagingContext(self)

    def _publish(self, writer: BlobWriter) -> None:
        assert writer.digest is not None
        final = self.blobs_dir / writer.digest.removeprefix("sha256:")
        writer.release()
        if writer.diff_id is not None:
            self._note_layer(writer.digest, writer.diff_id)
        if final.exists():
            # Same content is already there (another build wrote it): keep the existing file, and
            # refresh its mtime so gc's min_age protects it until our image references it.
            writer.temp_path.unlink(missing_ok=True)
            try:
                os.utime(final)
            except FileNotFoundError:  # gc removed it just now: publish ours after all
                return self._publish_again(writer)
        else:
            os.chmod(writer.temp_path, 0o444)
            os.rename(writer.temp_path, final)

    def _publish_again(self, writer: BlobWriter) -> None:
        raise StoreError(f"blob {writer.digest} was removed by a concurrent prune while being written",
                         hint="run the command again")

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

    # --- layers and snapshots ---

    def _record_layer(self, diff_id: str, blob_digest: str, media_type: str, size: int) -> None:
        """Remember that `blob_digest` is a (compressed) tar whose uncompressed digest is `diff_id`.

        Only for a pair the builder hashed itself (write_layer hashes the tar it writes)."""
        check_digest(diff_id)
        check_digest(blob_digest)
        with self._tx() as tx:
            tx.execute("INSERT INTO layers(blob_digest, diff_id, media_type, size) VALUES (?,?,?,?) "
                       "ON CONFLICT(blob_digest) DO UPDATE SET diff_id=excluded.diff_id",
                       (blob_digest, diff_id, media_type, size))

    def _note_layer(self, blob_digest: str, diff_id: str) -> None:
        with self._hashed_lock:
            self._hashed_layers[blob_digest] = diff_id

    def layer_diff_id(self, blob_digest: str) -> str:
        """The diff_id of a stored layer blob as the builder itself hashed it: learnt while this
        process wrote or unpacked the blob, else from the `layers` table (written only after
        hashing), else by reading the blob once now. Never what a config claims."""
        check_digest(blob_digest)
        with self._hashed_lock:
            known = self._hashed_layers.get(blob_digest)
        if known is not None:
            return known
        row = self._db().execute("SELECT diff_id FROM layers WHERE blob_digest=?", (blob_digest,)).fetchone()
        if row is not None:
            return row[0]
        from builder.image.layerapi import open_layer_stream

        try:
            with self.open_blob(blob_digest) as raw:
                stream = HashingReader(open_layer_stream(raw))
                stream.drain()
        except ArchiveError as exc:
            raise StoreError(f"layer blob {blob_digest} is not a readable layer: {exc.message}",
                             hint="the image is corrupt; remove it and pull or load it again") from exc
        except OSError as exc:
            raise StoreError(f"cannot read layer blob {blob_digest}: {exc}") from exc
        self._note_layer(blob_digest, stream.digest())
        return stream.digest()

    def layer_blobs(self, diff_id: str) -> list[tuple[str, str, int]]:
        """(blob digest, media type, size) of every stored blob known (by hashing) to hold this diff_id."""
        rows = self._db().execute(
            "SELECT blob_digest, media_type, size FROM layers WHERE diff_id=? ORDER BY blob_digest", (diff_id,)
        ).fetchall()
        return [(d, m, s) for d, m, s in rows if self.has_blob(d)]

    def put_layer_from_dir(self, layer_dir: Path, *, compression: str = "gzip", level: int | None = None,
                           source_date_epoch: int | None = None, threads: int | None = None,
                           adopt: bool = False):
        """Tar `layer_dir` (overlay-upper format) into a blob; with adopt=True also move the dir in
        as the snapshot of its diff_id, so it need not be unpacked again. Returns LayerDigests."""
        from builder.image.layerapi import write_layer

        with self.blob_writer() as writer:
            digests = write_layer(Path(layer_dir), writer, compression=compression, level=level,
                                  source_date_epoch=source_date_epoch, threads=threads)
        if writer.digest != digests.digest:
            raise StoreError(f"layer writer reported {digests.digest} but wrote {writer.digest}")
        self._record_layer(digests.diff_id, digests.digest, digests.media_type, digests.size)
        if adopt:
            from builder.layer.times import match_layer_times

            match_layer_times(Path(layer_dir), source_date_epoch)
            self.adopt_snapshot(digests.diff_id, Path(layer_dir))
        return digests

    def _snapshot_row(self, diff_id: str) -> int | None:
        row = self._db().execute("SELECT n FROM snapshots WHERE diff_id=?", (diff_id,)).fetchone()
        return None if row is None else int(row[0])

    def _claim_snapshot_number(self, diff_id: str) -> int:
        now = time.time()
        with self._tx() as tx:
            tx.execute("INSERT OR IGNORE INTO snapshots(diff_id, created, last_used) VALUES (?,?,?)",
                       (diff_id, now, now))
            return int(tx.execute("SELECT n FROM snapshots WHERE diff_id=?", (diff_id,)).fetchone()[0])

    def _snapshot_present(self, n: int) -> bool:
        """s/<n> exists as a real dir (a link there would lead an overlay lowerdir outside)."""
        try:
            return stat.S_ISDIR(os.lstat(self.snapshots_dir / str(n)).st_mode)
        except OSError:
            return False

    def has_snapshot(self, diff_id: str) -> bool:
        n = self._snapshot_row(diff_id)
        return n is not None and self._snapshot_present(n)

    def adopt_snapshot(self, diff_id: str, layer_dir: Path) -> bool:
        """Move `layer_dir` in as the snapshot of `diff_id`; False (dir left alone) when one exists
        already or the dir is on another file system."""
        check_digest(diff_id)
        with self.lock("snap-" + diff_id.removeprefix("sha256:")):
            if self.has_snapshot(diff_id):
                return False
            n = self._claim_snapshot_number(diff_id)
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
        row = self._db().execute("SELECT n, last_used FROM snapshots WHERE diff_id=?", (diff_id,)).fetchone()
        if row is not None and self._snapshot_present(row[0]):
            if time.time() - row[1] > 600:  # coarse last-use mark, so gc's min_age spares dirs in use
                with self._tx() as tx:
                    tx.execute("UPDATE snapshots SET last_used=? WHERE n=?", (time.time(), row[0]))
            return self.snapshots_dir / str(row[0])
        with self.lock("snap-" + diff_id.removeprefix("sha256:")):
            n = self._snapshot_row(diff_id)
            if n is not None and self._snapshot_present(n):
                return self.snapshots_dir / str(n)
            if blob_digest is None or not self.has_blob(blob_digest):
                known = self.layer_blobs(diff_id)
                if not known:
                    raise StoreError(f"no layer blob in the store has diff_id {diff_id}",
                                     hint="the image's layers are missing; pull or build it again")
                blob_digest = known[0][0]
            n = self._claim_snapshot_number(diff_id)
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
        from builder.image.layerapi import open_layer_stream, unpack_layer

        with self.open_blob(blob_digest) as raw:
            stream = HashingReader(open_layer_stream(raw))
            unpack_layer(stream, dest)
            stream.drain()
        if stream.digest() != diff_id:
            raise StoreError(f"layer blob {blob_digest} unpacks to {stream.digest()}, not {diff_id}",
                             hint="the store is corrupt; run fsck and remove the image")
        self._note_layer(blob_digest, diff_id)

    def snapshot_dirs(self, ref: str) -> list[Path]:
        """The snapshot dirs of an image's layers, lowest first."""
        record = self.load_image(ref)
        layers = oci.manifest_layers(record.manifest)
        diff_ids = oci.config_diff_ids(record.config)
        if len(layers) != len(diff_ids):
            raise StoreError(f"image {record.manifest_digest} has {len(layers)} layers but {len(diff_ids)} diff_ids")
        return [self.snapshot_dir(d, layer.digest) for layer, d in zip(layers, diff_ids)]

    # --- images ---

    def save_image(self, manifest: dict, config: dict) -> ImageRecord:
        """Store a manifest and config (both serialised canonically) and record the image."""
        config_bytes = oci.canonical_json(config)
        config_digest = oci.sha256_digest(config_bytes)
        declared = (manifest.get("config") or {}).get("digest")
        if declared != config_digest:
            raise StoreError(
                f"the manifest's config descriptor ({declared}) does not match the config ({config_digest})",
                hint="build the manifest with builder.image.oci.make_manifest_for_config(config, layers)")
        return self.save_image_bytes(oci.canonical_json(manifest), config_bytes)

    def save_image_bytes(self, manifest_bytes: bytes, config_bytes: bytes) -> ImageRecord:
        """Store a manifest and config exactly as given (digests preserved, e.g. pulled images)."""
        try:
            manifest = json.loads(manifest_bytes)
            config = json.loads(config_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"image manifest or config is not valid JSON: {exc}") from exc
        config_digest = oci.sha256_digest(config_bytes)
        declared = (manifest.get("config") or {}).get("digest")
        if declared != config_digest:
            raise StoreError(f"the manifest's config descriptor ({declared}) does not match the config ({config_digest})")
        layers = oci.manifest_layers(manifest)
        missing = [layer.digest for layer in layers if not self.has_blob(layer.digest)]
        if missing:
            raise StoreError(f"image layers missing from the store: {', '.join(missing)}",
                             hint="put every layer blob before saving the image")
        diff_ids = oci.config_diff_ids(config)
        if len(diff_ids) != len(layers):
            raise StoreError(f"the config lists {len(diff_ids)} diff_ids but the manifest {len(layers)} layers")
        for layer, claimed in zip(layers, diff_ids):
            actual = self.layer_diff_id(layer.digest)
            if actual != claimed:
                raise DiffIdMismatch(layer.digest, claimed, actual)
        self.put_blob(config_bytes, config_digest)
        manifest_digest, _ = self.put_blob(manifest_bytes)
        with self._tx() as tx:
            for layer, diff_id in zip(layers, diff_ids):  # each pair hashed above
                tx.execute("INSERT INTO layers(blob_digest, diff_id, media_type, size) VALUES (?,?,?,?) "
                           "ON CONFLICT(blob_digest) DO UPDATE SET diff_id=excluded.diff_id",
                           (layer.digest, diff_id, layer.media_type, layer.size))
            tx.execute("INSERT OR IGNORE INTO images(manifest_digest, config_digest, created) VALUES (?,?,?)",
                       (manifest_digest, config_digest, time.time()))
        return ImageRecord(manifest_digest, manifest, config_digest, config, self._tags_of(manifest_digest))

    def _tags_of(self, manifest_digest: str) -> list[str]:
        rows = self._db().execute("SELECT name FROM tags WHERE manifest_digest=? ORDER BY name",
                                  (manifest_digest,)).fetchall()
        return [r[0] for r in rows]

    def _record(self, manifest_digest: str) -> ImageRecord:
        row = self._db().execute("SELECT config_digest FROM images WHERE manifest_digest=?",
                                 (manifest_digest,)).fetchone()
        if row is None:
            raise ImageNotFound(f"image {manifest_digest} is not in the local store")
        manifest = self.read_json(manifest_digest)
        config = self.read_json(row[0])
        return ImageRecord(manifest_digest, manifest, row[0], config, self._tags_of(manifest_digest))

    def resolve(self, ref: str) -> str:
        """The manifest digest `ref` names: a tag, `name@digest`, a manifest digest, or an image ID."""
        text = ref.strip()
        db = self._db()
        if oci.is_digest(text):
            if db.execute("SELECT 1 FROM images WHERE manifest_digest=?", (text,)).fetchone():
                return text
            by_config = self._manifests_for_config(text)
            if by_config:
                return by_config[0]
            raise ImageNotFound(f"no image with digest {text} in the local store",
                                hint="a digest names a manifest or an image ID (config digest)")
        if "@" in text:
            try:
                parsed = parse_reference(text)
            except InvalidReference:
                parsed = None
            if parsed is not None and parsed.digest and oci.is_digest(parsed.digest):
                return self.resolve(parsed.digest)
        tag_error: InvalidReference | None = None
        try:
            name = normalize_tag(text)
        except InvalidReference as exc:
            tag_error, name = exc, None
        if name is not None:
            row = db.execute("SELECT manifest_digest FROM tags WHERE name=?", (name,)).fetchone()
            if row:
                return row[0]
        if _HEX_PREFIX.match(text):
            prefix = text if text.startswith("sha256:") else "sha256:" + text
            configs = sorted({r[0] for r in db.execute(
                "SELECT config_digest FROM images WHERE substr(config_digest, 1, ?) = ?",
                (len(prefix), prefix))})
            if len(configs) == 1:
                return self._manifests_for_config(configs[0])[0]
            if len(configs) > 1:
                raise ImageNotFound(f"image ID prefix {text!r} is ambiguous ({len(configs)} images match)",
                                    hint="give more characters of the image ID")
        if tag_error is not None and not _HEX_PREFIX.match(text):
            raise ImageNotFound(f"{text!r} is not a valid image reference: {tag_error.message}",
                                hint=tag_error.hint)
        known = [t for t, _ in self.tags()][:5]
        hint = "known tags: " + ", ".join(known) if known else "the local store has no tagged images; build or load one"
        raise ImageNotFound(f"image {text!r} not found in the local store", hint=hint)

    def _manifests_for_config(self, config_digest: str) -> list[str]:
        rows = self._db().execute(
            "SELECT i.manifest_digest FROM images i LEFT JOIN tags t ON t.manifest_digest = i.manifest_digest "
            "WHERE i.config_digest=? GROUP BY i.manifest_digest ORDER BY COUNT(t.name) DESC, i.created DESC",
            (config_digest,)).fetchall()
        return [r[0] for r in rows]

    def load_image(self, ref: str) -> ImageRecord:
        return self._record(self.resolve(ref))

    def images(self) -> list[ImageRecord]:
        rows = self._db().execute("SELECT manifest_digest FROM images ORDER BY created, manifest_digest").fetchall()
        return [self._record(r[0]) for r in rows]

    # --- tags ---

    def tag(self, name: str, manifest_digest: str) -> str:
        """Point tag `name` (normalised, `name` -> `name:latest`) at an image; returns the tag."""
        tag_name = normalize_tag(name)
        check_digest(manifest_digest)
        with self._tx() as tx:
            if not tx.execute("SELECT 1 FROM images WHERE manifest_digest=?", (manifest_digest,)).fetchone():
                raise ImageNotFound(f"cannot tag {tag_name}: image {manifest_digest} is not in the local store")
            tx.execute("INSERT INTO tags(name, manifest_digest, updated) VALUES (?,?,?) "
                       "ON CONFLICT(name) DO UPDATE SET manifest_digest=excluded.manifest_digest, "
                       "updated=excluded.updated", (tag_name, manifest_digest, time.time()))
        return tag_name

    def untag(self, name: str) -> bool:
        tag_name = normalize_tag(name)
        with self._tx() as tx:
            return tx.execute("DELETE FROM tags WHERE name=?", (tag_name,)).rowcount > 0

    def tags(self) -> list[tuple[str, str]]:
        return [(n, d) for n, d in self._db().execute("SELECT name, manifest_digest FROM tags ORDER BY name")]

    def delete_image(self, ref: str, *, force: bool = False) -> list[str]:
        """Like `docker rmi`: a tag is removed; the image goes when no tag is left. Returns what was done."""
        done: list[str] = []
        manifest_digest = self.resolve(ref)
        by_tag: str | None = None
        try:
            candidate = normalize_tag(ref)
            if any(n == candidate for n, _ in self.tags()):
                by_tag = candidate
        except InvalidReference:
            pass
        with self._tx() as tx:
            if by_tag is not None:
                tx.execute("DELETE FROM tags WHERE name=?", (by_tag,))
                done.append(f"Untagged: {by_tag}")
            remaining = [r[0] for r in tx.execute("SELECT name FROM tags WHERE manifest_digest=?",
                                                 (manifest_digest,))]
            if remaining and by_tag is None and not force:
                raise StoreError(f"image {manifest_digest} is tagged as {', '.join(remaining)}",
                                 hint="remove it by tag, or force the removal of all its tags")
            if remaining and by_tag is None:
                tx.execute("DELETE FROM tags WHERE manifest_digest=?", (manifest_digest,))
                done.extend(f"Untagged: {n}" for n in remaining)
                remaining = []
            if not remaining:
                tx.execute("DELETE FROM images WHERE manifest_digest=?", (manifest_digest,))
                done.append(f"Deleted: {manifest_digest}")
        return done

    # --- step cache ---

    def cache_get(self, key: str, *, touch: bool = True) -> dict | None:
        """A step-cache value; `touch` marks it used now (else call cache_touch later, in bulk)."""
        row = self._db().execute("SELECT value, last_used FROM cache WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        if touch and time.time() - row[1] > 60:  # coarse: avoids a write transaction per cache hit
            self.cache_touch([key])
        return json.loads(row[0])

    def cache_touch(self, keys: Iterable[str]) -> None:
        """Mark entries used now, in one transaction (prune forgets entries unused for long)."""
        now = time.time()
        rows = [(now, key, now - 60) for key in keys]
        if rows:
            with self._tx() as tx:
                tx.executemany("UPDATE cache SET last_used=? WHERE key=? AND last_used<?", rows)

    def cache_put(self, key: str, value: dict) -> None:
        self.cache_put_many([(key, value)])

    def cache_put_many(self, items: Iterable[tuple[str, dict]]) -> None:
        """Write step-cache entries in one transaction (one fsync however many)."""
        now = time.time()
        rows = [(key, json.dumps(value, sort_keys=True, separators=(",", ":")), now, now) for key, value in items]
        if rows:
            with self._tx() as tx:
                tx.executemany("INSERT INTO cache(key, value, created, last_used) VALUES (?,?,?,?) "
                               "ON CONFLICT(key) DO UPDATE SET value=excluded.value, last_used=excluded.last_used",
                               rows)

    def cache_delete(self, key: str) -> bool:
        with self._tx() as tx:
            return tx.execute("DELETE FROM cache WHERE key=?", (key,)).rowcount > 0

    def cache_prune(self, *, unused_for: float) -> int:
        """Forget cache entries not used for `unused_for` seconds; returns how many."""
        with self._tx() as tx:
            return tx.execute("DELETE FROM cache WHERE last_used < ?", (time.time() - unused_for,)).rowcount

    def cache_entries(self) -> list[tuple[str, dict, float]]:
        return [(k, json.loads(v), lu) for k, v, lu in
                self._db().execute("SELECT key, value, last_used FROM cache ORDER BY key")]

    # --- garbage collection and checks ---

    def _live_digests(self) -> tuple[set[str], set[str]]:
        """(blob digests, diff_ids) reachable from image records and step-cache values."""
        blobs: set[str] = set()
        diff_ids: set[str] = set()
        db = self._db()
        for manifest_digest, config_digest in db.execute("SELECT manifest_digest, config_digest FROM images"):
            blobs.update((manifest_digest, config_digest))
            try:
                manifest = self.read_json(manifest_digest)
                blobs.update(layer.digest for layer in oci.manifest_layers(manifest))
                diff_ids.update(oci.config_diff_ids(self.read_json(config_digest)))
            except StoreError:
                continue
        for (value,) in db.execute("SELECT value FROM cache"):
            # Cache values are the solver's JSON; any digest mentioned in one is kept alive.
            found = set(_DIGEST_IN_TEXT.findall(value))
            blobs |= found
            diff_ids |= found
        for blob_digest, diff_id in db.execute("SELECT blob_digest, diff_id FROM layers").fetchall():
            if diff_id in blobs:  # a cache entry naming a diff_id keeps its blob too
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
        if not dry_run and result.removed_blobs:
            with self._tx() as tx:
                tx.executemany("DELETE FROM layers WHERE blob_digest=?", [(d,) for d in result.removed_blobs])
        rows = self._db().execute("SELECT n, diff_id, last_used FROM snapshots").fetchall()
        with store_dir(self.root, "s") as snapshots_fd, store_dir(self.root, "tmp") as tmp_fd:
            for n, diff_id, last_used in rows:
                if diff_id in live_diff_ids or now - last_used < min_age:
                    continue
                result.removed_snapshots.append(diff_id)
                if dry_run:
                    continue
                with self.lock("snap-" + diff_id.removeprefix("sha256:")):
                    trash = self._move_to_trash(snapshots_fd, str(n), tmp_fd)
                    with self._tx() as tx:
                        tx.execute("DELETE FROM snapshots WHERE n=?", (n,))
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
            trash = "del-" + secrets.token_hex(8)
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
        for sub in (*_STORE_DIRS, *_ON_DEMAND_DIRS):
            try:
                check_store_entry(self.root, sub, directory=True)
            except StoreError as exc:
                problems.append(exc.message)
        db = self._db()
        recorded: dict[str, str] = dict(db.execute("SELECT blob_digest, diff_id FROM layers").fetchall())
        images = db.execute("SELECT manifest_digest, config_digest FROM images").fetchall()
        parsed: dict[str, tuple[oci.Descriptor, list[oci.Descriptor]] | str] = {}
        for manifest_digest, _ in images:
            try:
                manifest = self.read_json(manifest_digest)
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
                    diff_ids = oci.config_diff_ids(self.read_json(config_digest))
                    if len(diff_ids) != len(layers):
                        problems.append(f"image {manifest_digest}: {len(layers)} layers but {len(diff_ids)} diff_ids")
                except StoreError as exc:
                    problems.append(f"image {manifest_digest}: config unreadable: {exc.message}")
            for index, layer in enumerate(layers):
                if layer.digest not in present:
                    problems.append(f"image {manifest_digest}: layer blob {layer.digest} missing")
                    continue
                actual = uncompressed.get(layer.digest)
                claimed = diff_ids[index] if index < len(diff_ids) else None
                if claimed is not None and isinstance(actual, str) and actual != claimed:
                    problems.append(f"image {manifest_digest}: layer {layer.digest}: the config claims diff_id "
                                    f"{claimed}, but its uncompressed content hashes to {actual}")
                elif isinstance(actual, Exception) and layer.digest not in recorded:
                    problems.append(f"image {manifest_digest}: layer {layer.digest} does not decompress: {actual}")
        for name, manifest_digest in self.tags():
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

    def _fsck_blobs(self, layer_digests: set[str], problems: list[str]) -> tuple[set[str], dict[str, str | Exception]]:
        """Hash every blob (and a layer's uncompressed stream in the same read); returns the
        digests present and intact, and the uncompressed digest (or the error) of each layer."""
        from builder.image.layerapi import open_layer_stream

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
                    raw = HashingReader(f)  # type: ignore[arg-type]
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
