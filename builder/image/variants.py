"""Layers as they leave the store: compressed when something asks, never before.

A layer the builder made is kept as its snapshot dir (and its diff_id); a pulled or loaded layer
keeps the blob its manifest names. An export or a push asks for each layer in a compression
and level; the blob is made then (from the dir, or by recompressing the blob), in parallel across
layers, and kept, keyed by (diff_id, compression, level), so a second export or push is free.

As BuildKit does, a layer that already has a compressed blob (a base image's) keeps it unless
the compression is forced; a layer made here gets the compression asked for.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, Protocol

from builder.errors import BuildError, StoreError
from builder.image import oci
from builder.image.blobfiles import CHUNK, BlobWriter, HashingReader
from builder.image.content import BlobStore, DiffInfo
from builder.image.lazy import LazyLayers
from builder.image.records import ImageRecords
from builder.image.snapshots import SnapshotStore

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from builder.layer.compress import ByteSink, BytesLike, HandOver

COMPRESSIONS = ("gzip", "zstd", "uncompressed")
DEFAULT_LEVELS = {"gzip": 6, "zstd": 3, "uncompressed": 0}
LEVEL_RANGES = {"gzip": (0, 9), "zstd": (0, 22), "uncompressed": (0, 0)}


def effective_level(compression: str, level: int | None) -> int:
    """The level a compression runs at (None: its default), checked against its range."""
    if compression not in COMPRESSIONS:
        raise BuildError(f"unknown compression {compression!r}", hint="use gzip, zstd or uncompressed")
    if level is None or compression == "uncompressed":
        return DEFAULT_LEVELS[compression]
    low, high = LEVEL_RANGES[compression]
    if not low <= level <= high:
        raise BuildError(f"--compression-level {level} is out of range for {compression}",
                         hint=f"{compression} levels go from {low} to {high}")
    return level


@dataclass(frozen=True)
class Shipment:
    """An image as it is to leave the store: its manifest (bytes and digest) and every blob it names."""

    manifest_digest: str
    manifest_bytes: bytes
    manifest: dict[str, Any]
    blobs: list[tuple[str, int]]  # (digest, size): manifest, config, layers, deduplicated


class Variants:
    """The layers of the store's images in the compressions exports and pushes ask for."""

    def __init__(self, blobs: BlobStore, snapshots: SnapshotStore, records: ImageRecords,
                 lazy: LazyLayers | None = None) -> None:
        self.blobs = blobs
        self.snapshots = snapshots
        self.records = records
        self.lazy = lazy

    def ship(self, manifest_digest: str, *, compression: str = "gzip", level: int | None = None,
             force: bool = False) -> Shipment:
        """The image `manifest_digest` with its layers in `compression` (made now where missing,
        in parallel across layers).

        When no layer changes, the manifest is the stored one, byte for byte; otherwise a new
        manifest (same config, so the same image ID) is stored as a blob and named here."""
        plan = self.plan(manifest_digest, compression=compression, level=level, force=force)
        pending = plan.pending()
        with plan.pool() as pool:
            made = dict(zip(pending, pool.map(plan.make, pending), strict=True))
        return plan.finish(made)

    def plan(self, manifest_digest: str, *, compression: str = "gzip", level: int | None = None,
             force: bool = False) -> ShipPlan:
        """What shipping the image takes: the layers whose blob is ready, and those to be made
        (ShipPlan.make, in any order or in parallel; ShipPlan.finish gives the Shipment)."""
        lvl = effective_level(compression, level)
        record = self.records.load_image(manifest_digest)
        layers = oci.manifest_layers(record.manifest)
        diff_ids = oci.config_diff_ids(record.config)
        if len(layers) != len(diff_ids):
            raise StoreError(f"image {manifest_digest} has {len(layers)} layers but {len(diff_ids)} diff_ids")
        docker = record.manifest.get("mediaType") == oci.DOCKER_MANIFEST
        ready = [self._ready_blob(layer, diff_id, compression, lvl, force=force, docker=docker)
                 for layer, diff_id in zip(layers, diff_ids, strict=True)]
        return ShipPlan(self, manifest_digest, record.manifest, layers, diff_ids, ready, compression, lvl, docker)

    def layer_blob(self, layer: oci.Descriptor, diff_id: str, compression: str, level: int, *,
                   force: bool = False, docker: bool = False) -> oci.Descriptor:
        """The blob to ship for one layer: a base image's own blob unless `force` asks for another
        compression; else (a layer made here, or forced) the cached or new blob in `compression`."""
        ready = self._ready_blob(layer, diff_id, compression, level, force=force, docker=docker)
        if ready is not None:
            return ready
        return self.make_blob(layer, diff_id, compression, level, docker=docker)

    def _ready_blob(self, layer: oci.Descriptor, diff_id: str, compression: str, level: int, *,
                    force: bool, docker: bool) -> oci.Descriptor | None:
        """The layer's blob as it is to ship when the store has it already; None when it is to be made."""
        info = self.blobs.diff(diff_id)
        made_here = info is not None and info.from_dir and layer.digest == diff_id
        if not made_here and self.lazy is not None and self.lazy.is_lazy(layer.digest):
            # Still in the cache it came from (Store.ship(fetch=False)): it goes out as it is there.
            return layer
        if not made_here and self.blobs.has_blob(layer.digest):
            if not force or oci.layer_compression(layer.media_type) == compression:
                return layer  # a base image's blob stays as it is unless forced, as in BuildKit
        found = self.blobs.variant(diff_id, compression, level)
        return None if found is None else _descriptor(found, compression, docker)

    def make_blob(self, layer: oci.Descriptor, diff_id: str, compression: str, level: int, *,
                  docker: bool = False, tee: BlobTee | None = None) -> oci.Descriptor:
        """The layer compressed now into a blob that is kept; `tee` also gets its bytes as they are made."""
        return _descriptor(self._make_variant(layer, diff_id, compression, level, tee), compression, docker)

    def _make_variant(self, layer: oci.Descriptor, diff_id: str, compression: str, level: int,
                      tee: BlobTee | None) -> tuple[str, int]:
        if self.blobs.has_blob(layer.digest):
            digest, size = self._recompress(layer, diff_id, compression, level, tee)
        else:
            digest, size = self._compress_dir(diff_id, compression, level, tee)
        self.blobs.record_layer(diff_id, digest, oci.oci_layer_media_type(compression), size)
        self.blobs.record_variant(diff_id, compression, level, digest, size)
        return digest, size

    def _recompress(self, layer: oci.Descriptor, diff_id: str, compression: str, level: int,
                    tee: BlobTee | None) -> tuple[str, int]:
        """Recompress what the blob holds, checking it is the layer the config names."""
        from builder.layer.compress import open_compressor
        from builder.layer.decompress import open_layer_stream

        with self.blobs.blob_writer() as writer:
            with self.blobs.open_blob(layer.digest) as raw:
                source = HashingReader(open_layer_stream(raw))
                with _teed(writer, tee) as sink:
                    compressor = open_compressor(compression, sink, level=level)
                    try:
                        while chunk := source.read(CHUNK):
                            compressor.write(chunk)
                    except BaseException:
                        compressor.abort()
                        raise
                    compressor.close()
            _check_diff_id(diff_id, source.digest())
        assert writer.digest is not None
        return writer.digest, writer.size

    def _compress_dir(self, diff_id: str, compression: str, level: int, tee: BlobTee | None) -> tuple[str, int]:
        """The layer written from its snapshot dir. Its tar is not hashed again when the dir's
        signature is the one it had when its tar was hashed to the diff_id (builder.layer.treesig);
        otherwise it is, and a tar that still hashes to the diff_id gives the dir its signature."""
        from builder.layer.tarwrite import stream_layer
        from builder.layer.treesig import TreeChanged, TreeSignature, Trusted

        info = self._made_here(diff_id)
        snapshot = self.snapshots.snapshot_dir(diff_id)
        # Uncompressed, the blob is the tar: the writer's own hash checks it whatever the signature says.
        expected = diff_id if compression == "uncompressed" else None
        if info.signature is not None:
            try:
                with self.blobs.blob_writer(expected) as writer, _teed(writer, tee) as sink:
                    stream_layer(snapshot, sink, compression=compression, level=level,
                                 source_date_epoch=info.epoch, trusted=Trusted(diff_id, info.signature))
            except TreeChanged:
                # Nothing published: written again below, hashed; what the tee got is void.
                if tee is not None:
                    tee.restart()
            else:
                assert writer.digest is not None
                return writer.digest, writer.size
        signature = TreeSignature(info.epoch)
        with self.blobs.blob_writer(expected) as writer, _teed(writer, tee) as sink:
            # The writer hashes the blob itself: stream_layer does not hash it a second time.
            made, _ = stream_layer(snapshot, sink, compression=compression, level=level,
                                   source_date_epoch=info.epoch, signature=signature)
            _check_diff_id(diff_id, made)
        self.blobs.record_signature(diff_id, signature.value())
        assert writer.digest is not None
        return writer.digest, writer.size

    def _made_here(self, diff_id: str) -> DiffInfo:
        info = self.blobs.diff(diff_id)
        if info is None or not info.from_dir:
            raise StoreError(f"layer {diff_id} has neither a blob nor a snapshot the builder made",
                             hint="pull or build the image again")
        return info

    @contextmanager
    def open_layer_tar(self, layer: oci.Descriptor, diff_id: str) -> Iterator[BinaryIO]:
        """The layer's uncompressed tar as a stream: its blob decompressed, or written from its
        snapshot dir by a thread as it is read (nothing on disk). The end of a snapshot's stream
        is checked against the diff_id."""
        if self.blobs.has_blob(layer.digest):
            from builder.layer.decompress import open_layer_stream

            with self.blobs.open_blob(layer.digest) as raw:
                yield open_layer_stream(raw)
            return
        info = self._made_here(diff_id)
        snapshot = self.snapshots.snapshot_dir(diff_id)
        read_fd, write_fd = os.pipe()
        outcome: dict[str, Any] = {}

        def produce() -> None:
            from builder.layer.tarwrite import write_layer

            try:
                with os.fdopen(write_fd, "wb", buffering=CHUNK) as out:
                    outcome["diff_id"] = write_layer(snapshot, out, compression="uncompressed",
                                                     source_date_epoch=info.epoch).diff_id
            except BaseException as exc:  # noqa: BLE001 - reported to the reader below
                outcome["error"] = exc

        thread = threading.Thread(target=produce, name="layer-tar", daemon=True)
        thread.start()
        reader = os.fdopen(read_fd, "rb", buffering=CHUNK)
        try:
            yield reader
        except BaseException:
            reader.close()  # the writer then stops on a broken pipe
            thread.join()
            raise
        reader.close()
        thread.join()
        if "error" in outcome or outcome.get("diff_id") != diff_id:
            raise StoreError(f"layer {diff_id} could not be read back from its snapshot "
                             f"({outcome.get('error') or outcome.get('diff_id')})",
                             hint="run fsck; remove the image and build it again")


@dataclass
class ShipPlan:
    """One image's layers as one export or push ships them: `ready[i]` is the blob of layer i
    when the store has it, None when `make(i)` is to make it now."""

    variants: Variants
    manifest_digest: str
    manifest: dict[str, Any]
    layers: list[oci.Descriptor]
    diff_ids: list[str]
    ready: list[oci.Descriptor | None]
    compression: str
    level: int
    docker: bool

    def pending(self) -> list[int]:
        """The layers to make, each once (an image may name one layer twice), in manifest order."""
        seen: set[str] = set()
        indexes = []
        for index, blob in enumerate(self.ready):
            if blob is None and self.diff_ids[index] not in seen:
                seen.add(self.diff_ids[index])
                indexes.append(index)
        return indexes

    def pool(self) -> ThreadPoolExecutor:
        """Threads to make the pending layers side by side (compressors release the GIL)."""
        from concurrent.futures import ThreadPoolExecutor  # only an export or push loads it

        return ThreadPoolExecutor(max_workers=max(1, min(4, len(self.pending()))))

    def uncompressed_size(self, index: int) -> int:
        info = self.variants.blobs.diff(self.diff_ids[index])
        return 0 if info is None else info.size

    def make(self, index: int, tee: BlobTee | None = None) -> oci.Descriptor:
        return self.variants.make_blob(self.layers[index], self.diff_ids[index], self.compression, self.level,
                                       docker=self.docker, tee=tee)

    def finish(self, made: dict[int, oci.Descriptor]) -> Shipment:
        """The Shipment, once every pending layer is in `made` (by index)."""
        by_diff_id = {self.diff_ids[index]: blob for index, blob in made.items()}
        shipped = [blob if blob is not None else by_diff_id[self.diff_ids[index]]
                   for index, blob in enumerate(self.ready)]
        blobs = self.variants.blobs
        if shipped == self.layers:
            manifest_bytes = blobs.read_blob(self.manifest_digest)
            digest = self.manifest_digest
            manifest = self.manifest
        else:
            manifest = dict(self.manifest)
            manifest["layers"] = [layer.to_json() for layer in shipped]
            manifest_bytes = oci.canonical_json(manifest)
            digest, _ = blobs.put_blob(manifest_bytes)
        config = oci.manifest_config(manifest)
        sizes: dict[str, int] = {digest: len(manifest_bytes), config.digest: config.size}
        for layer in shipped:
            sizes.setdefault(layer.digest, layer.size)
        return Shipment(digest, manifest_bytes, manifest, list(sizes.items()))


class BlobTee(Protocol):
    """Where a blob's bytes also go while the store's copy is made (an export's output)."""

    def write(self, data: BytesLike) -> int: ...

    def restart(self) -> None:
        """The bytes so far are void: the blob is made again from its start."""


class _Teed:
    def __init__(self, writer: BlobWriter, tee: HandOver) -> None:
        self._writer = writer
        self._tee = tee

    def write(self, data: BytesLike) -> int:
        self._tee.write(data)  # queued first: the tee's thread writes it while this one hashes
        self._writer.write(data)
        return len(data)


@contextmanager
def _teed(writer: BlobWriter, tee: BlobTee | None) -> Iterator[ByteSink]:
    """What a blob being made is written to: the store's writer and, with a tee, the tee too,
    fed by a thread of its own. Hashing and writing the kept blob and writing the export's copy
    then run side by side: on two cores that thread was what the tar writer waited for (the tee's
    write after the hash, one after the other). On the way out the tee has every byte (or, after
    a failure, is stopped) before anyone restarts or finishes it."""
    if tee is None:
        yield writer
        return
    from builder.layer.compress import HandOver

    tee_side = HandOver(tee)
    try:
        yield _Teed(writer, tee_side)
    except BaseException:
        tee_side.stop()
        raise
    tee_side.finish()


def _descriptor(blob: tuple[str, int], compression: str, docker: bool) -> oci.Descriptor:
    media_type = oci.oci_layer_media_type(compression)
    return oci.Descriptor(oci.OCI_TO_DOCKER_LAYER[media_type] if docker else media_type, blob[0], blob[1])


def _check_diff_id(diff_id: str, made: str) -> None:
    if made != diff_id:
        raise StoreError(f"layer {diff_id} now reads as {made}: its content changed in the store",
                         hint="run fsck; remove the image and build or pull it again")
