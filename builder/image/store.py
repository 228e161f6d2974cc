"""The local image store: one facade over its rooms, each a module of its own:

    content.py    blobs by digest, staged publication, what hashing taught us of layer blobs
    records.py    image records and tags
    snapshots.py  unpacked layers (overlay-upper format)
    lazy.py       layer blobs a build took from a shared cache, fetched when first read
    stepcache.py  the solver's step cache
    upkeep.py     gc and fsck
    index.py      the SQLite index they share;  blobfiles.py  the file system helpers

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

import fcntl
import os
import tempfile
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable, Iterator

from builder.errors import StoreError
from builder.image import oci
from builder.image.blobfiles import (
    BlobWriter,
    check_store_entry,
    default_root,
    open_lock_file,
    prepare_root,
    remove_tree,
)
from builder.image.content import BlobStore, StagingContext
from builder.image.index import StoreIndex
from builder.image.lazy import LazyLayers
from builder.image.records import ImageRecord, ImageRecords
from builder.image.snapshots import SnapshotStore
from builder.image.stepcache import StepCache
from builder.image.upkeep import GCResult, Upkeep
from builder.image.variants import Shipment, ShipPlan, Variants

if TYPE_CHECKING:
    from builder.image.lazy import LazyLayer
    from builder.layer.media import LayerDigests

__all__ = ["GCResult", "ImageRecord", "Store"]


# The store's own dirs (made on open), dirs other rooms make on demand, and its database files:
# none may be a link or another's.
_STORE_DIRS = ("blobs", "blobs/sha256", "s", "tmp", "locks")
_ON_DEMAND_DIRS = ("cache-mounts", "registry-sources", "cache")
_STORE_FILES = ("index.db", "index.db-wal", "index.db-shm", "statcache.db", "statcache.db-wal",
                "statcache.db-shm")


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs" / "sha256"
        self.snapshots_dir = root / "s"
        self.tmp_dir = root / "tmp"
        self.locks_dir = root / "locks"
        self.db_path = root / "index.db"
        # Compiled Buildfile parsers (builder.parse.grammar): private to the store's owner.
        self.parser_cache_dir = root / "cache"
        self.index = StoreIndex(self.db_path, root)
        self.blobs = BlobStore(root, self.index)
        self.snapshots = SnapshotStore(root, self.index, self.blobs, self.lock)
        self.lazy = LazyLayers(self.index, self.blobs, self.lock)
        self.records = ImageRecords(self.index, self.blobs, self.snapshots, self.lazy)
        self.variants = Variants(self.blobs, self.snapshots, self.records, self.lazy)
        self.step_cache = StepCache(self.index)
        self.upkeep = Upkeep(root, self.index, self.blobs, self.records, self.snapshots, self.lock,
                             (*_STORE_DIRS, *_ON_DEMAND_DIRS), self.lazy)

    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None) -> "Store":
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
        store.index.initialise()
        return store

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

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

    # --- blobs (content.py) ---

    def blob_path(self, digest: str) -> Path:
        return self.blobs.blob_path(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blobs.has_blob(digest)

    def blob_writer(self, expected_digest: str | None = None, *, layer: bool = False) -> AbstractContextManager[BlobWriter]:
        return self.blobs.blob_writer(expected_digest, layer=layer)

    def staging(self) -> StagingContext:
        return self.blobs.staging()

    def put_blob(self, data: bytes | BinaryIO | Iterable[bytes], expected_digest: str | None = None) -> tuple[str, int]:
        return self.blobs.put_blob(data, expected_digest)

    def put_json(self, obj: Any) -> tuple[str, int]:
        return self.blobs.put_json(obj)

    def open_blob(self, digest: str) -> BinaryIO:
        """A blob's bytes; a lazy layer blob (lazy.py) is fetched first."""
        self.fetch_lazy(digest)
        return self.blobs.open_blob(digest)

    def read_blob(self, digest: str) -> bytes:
        return self.blobs.read_blob(digest)

    def read_json(self, digest: str) -> dict:
        return self.blobs.read_json(digest)

    def layer_diff_id(self, blob_digest: str) -> str:
        return self.blobs.layer_diff_id(blob_digest)

    def layer_blobs(self, diff_id: str) -> list[tuple[str, str, int]]:
        return self.blobs.layer_blobs(diff_id)

    # --- lazy layers (lazy.py) ---

    def note_lazy_layer(self, blob_digest: str, *, diff_id: str, media_type: str, size: int,
                        origin: dict[str, Any]) -> None:
        """Let images name a layer blob that stays where it is (a cache) until something reads it."""
        self.lazy.note(blob_digest, diff_id=diff_id, media_type=media_type, size=size, origin=origin)

    def is_lazy(self, blob_digest: str) -> bool:
        return self.lazy.is_lazy(blob_digest)

    def lazy_layer(self, blob_digest: str) -> "LazyLayer | None":
        """Where a lazy blob is, when the store has not its bytes (None otherwise)."""
        return self.lazy.get(blob_digest) if not self.blobs.has_blob(blob_digest) else None

    def fetch_lazy(self, *blob_digests: str) -> None:
        """Download the lazy blobs among `blob_digests` (verified against their claimed diff_id)."""
        for digest in blob_digests:
            if not self.blobs.has_blob(digest) and self.lazy.get(digest) is not None:
                self.lazy.fetch(self, digest)

    def fetch_image_layers(self, manifest_digest: str) -> None:
        """Download every lazy layer of an image: for outputs that need all its bytes."""
        manifest = self.read_json(manifest_digest)
        self.fetch_lazy(*(layer.digest for layer in oci.manifest_layers(manifest)))

    # --- layers and snapshots (snapshots.py) ---

    def put_layer_from_dir(self, layer_dir: Path, *, source_date_epoch: int | None = None) -> "LayerDigests":
        """Take a layer dir (overlay-upper format) in as the snapshot of its diff_id. Nothing is
        compressed and no tar is written: the diff_id is hashed from the tar stream the dir makes,
        and the dir is kept as the layer's content (a copy is dropped if the store has the layer
        already). Compressed blobs are made when the layer leaves the store (variants.py).

        Returns the layer's local descriptor: its digest is the diff_id, its media type an
        uncompressed OCI layer."""
        from builder.layer.compress import NullSink
        from builder.layer.media import MEDIA_TYPE_TAR, LayerDigests
        from builder.layer.tarwrite import write_layer
        from builder.layer.times import match_layer_times
        from builder.layer.treesig import TreeSignature

        layer_dir = Path(layer_dir)
        # The dir's times become what the tar records, so writing it again later gives the same bytes.
        match_layer_times(layer_dir, source_date_epoch)
        signature = TreeSignature(source_date_epoch)
        digests = write_layer(layer_dir, NullSink(), compression="uncompressed", source_date_epoch=source_date_epoch,
                              signature=signature)
        self.blobs.record_diff(digests.diff_id, digests.size, from_dir=True, epoch=source_date_epoch)
        if self.snapshots.adopt_snapshot(digests.diff_id, layer_dir):
            # Only this dir, now the snapshot, has that signature (a rename leaves inodes and
            # ctimes of what is inside as they were); an export then need not hash its tar again.
            self.blobs.record_signature(digests.diff_id, signature.value())
        return LayerDigests(diff_id=digests.diff_id, digest=digests.diff_id, size=digests.size,
                            media_type=MEDIA_TYPE_TAR)

    def has_layer(self, digest: str) -> bool:
        """Whether a manifest's layer can be read: its blob is stored, or it is a layer the builder
        made (digest = diff_id) whose snapshot dir is its content."""
        if self.blobs.has_blob(digest):
            return True
        info = self.blobs.diff(digest)
        return info is not None and info.from_dir and self.snapshots.has_snapshot(digest)

    def open_layer_tar(self, digest: str, diff_id: str | None = None) -> AbstractContextManager[BinaryIO]:
        """`with store.open_layer_tar(digest) as tar:` the uncompressed tar of a manifest's layer:
        its blob decompressed, or, for a layer made here (digest = diff_id), written from its
        snapshot dir as it is read."""
        self.fetch_lazy(digest)
        return self.variants.open_layer_tar(oci.Descriptor(oci.OCI_LAYER_TAR, digest, 0), diff_id or digest)

    def ship(self, manifest_digest: str, *, compression: str = "gzip", level: int | None = None,
             force: bool = False, fetch: bool = True) -> Shipment:
        """The image with its layers in `compression`, for an export or a push (variants.py).
        `fetch=False` leaves lazy layers where they are (a push that can mount them); their
        blobs then go out as the cache has them."""
        if fetch:
            self.fetch_image_layers(manifest_digest)
        return self.variants.ship(manifest_digest, compression=compression, level=level, force=force)

    def plan_ship(self, manifest_digest: str, *, compression: str = "gzip", level: int | None = None,
                  force: bool = False) -> ShipPlan:
        """What `ship` does, in steps the caller runs (an export writing a layer as it is made)."""
        self.fetch_image_layers(manifest_digest)
        return self.variants.plan(manifest_digest, compression=compression, level=level, force=force)

    def ship_layer(self, layer: oci.Descriptor, diff_id: str, *, compression: str = "gzip",
                   level: int | None = None, force: bool = False) -> oci.Descriptor:
        """One layer's blob as an export ships it (a cache export: builder.cache): made here, in
        `compression` (made now where missing, then kept); else the blob it has, lazy or not."""
        from builder.image.variants import effective_level

        if self.is_lazy(layer.digest):
            if not force or oci.layer_compression(layer.media_type) == compression:
                return layer
            self.fetch_lazy(layer.digest)
        return self.variants.layer_blob(layer, diff_id, compression, effective_level(compression, level), force=force)

    def has_snapshot(self, diff_id: str) -> bool:
        return self.snapshots.has_snapshot(diff_id)

    def adopt_snapshot(self, diff_id: str, layer_dir: Path) -> bool:
        return self.snapshots.adopt_snapshot(diff_id, layer_dir)

    def snapshot_dir(self, diff_id: str, blob_digest: str | None = None) -> Path:
        """The unpacked layer; a lazy blob is fetched first when the layer is not unpacked yet."""
        if blob_digest is not None and not self.snapshots.has_snapshot(diff_id):
            self.fetch_lazy(blob_digest)
        return self.snapshots.snapshot_dir(diff_id, blob_digest)

    def unpack_layers(self, manifest: dict, config: dict) -> list[Path]:
        """The snapshot dirs of an image's layers (its manifest and config, stored or not yet),
        unpacked now where missing; each blob's content is checked against its diff_id."""
        layers = oci.manifest_layers(manifest)
        diff_ids = oci.config_diff_ids(config)
        if len(layers) != len(diff_ids):
            raise StoreError(f"the manifest lists {len(layers)} layers but the config {len(diff_ids)} diff_ids")
        return [self.snapshot_dir(diff_id, layer.digest) for layer, diff_id in zip(layers, diff_ids, strict=True)]

    def snapshot_dirs(self, ref: str) -> list[Path]:
        """The snapshot dirs of an image's layers, lowest first."""
        record = self.load_image(ref)
        return self.unpack_layers(record.manifest, record.config)

    # --- images and tags (records.py) ---

    def save_image(self, manifest: dict, config: dict) -> ImageRecord:
        return self.records.save_image(manifest, config)

    def save_image_bytes(self, manifest_bytes: bytes, config_bytes: bytes) -> ImageRecord:
        return self.records.save_image_bytes(manifest_bytes, config_bytes)

    def resolve(self, ref: str) -> str:
        return self.records.resolve(ref)

    def load_image(self, ref: str) -> ImageRecord:
        return self.records.load_image(ref)

    def images(self) -> list[ImageRecord]:
        return self.records.images()

    def tag(self, name: str, manifest_digest: str) -> str:
        return self.records.tag(name, manifest_digest)

    def untag(self, name: str) -> bool:
        return self.records.untag(name)

    def tags(self) -> list[tuple[str, str]]:
        return self.records.tags()

    def delete_image(self, ref: str, *, force: bool = False) -> list[str]:
        return self.records.delete_image(ref, force=force)

    # --- step cache (stepcache.py) ---

    def cache_get(self, key: str, *, touch: bool = True) -> dict | None:
        return self.step_cache.cache_get(key, touch=touch)

    def cache_touch(self, keys: Iterable[str]) -> None:
        self.step_cache.cache_touch(keys)

    def cache_put(self, key: str, value: dict) -> None:
        self.step_cache.cache_put(key, value)

    def cache_put_many(self, items: Iterable[tuple[str, dict]]) -> None:
        self.step_cache.cache_put_many(items)

    def cache_delete(self, key: str) -> bool:
        return self.step_cache.cache_delete(key)

    def cache_prune(self, *, unused_for: float) -> int:
        return self.step_cache.cache_prune(unused_for=unused_for)

    def cache_entries(self) -> list[tuple[str, dict, float]]:
        return self.step_cache.cache_entries()

    # --- upkeep (upkeep.py) ---

    def gc(self, *, min_age: float = 3600.0, dry_run: bool = False) -> GCResult:
        return self.upkeep.gc(min_age=min_age, dry_run=dry_run)

    def fsck(self) -> list[str]:
        return self.upkeep.fsck()
