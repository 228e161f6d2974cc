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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator

from builder.errors import BuildError, StoreError
from builder.image import oci
from builder.image.blobfiles import CHUNK, HashingReader
from builder.image.content import BlobStore, DiffInfo
from builder.image.lazy import LazyLayers
from builder.image.records import ImageRecords
from builder.image.snapshots import SnapshotStore

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
        """The image `manifest_digest` with its layers in `compression` (made now where missing).

        When no layer changes, the manifest is the stored one, byte for byte; otherwise a new
        manifest (same config, so the same image ID) is stored as a blob and named here."""
        lvl = effective_level(compression, level)
        record = self.records.load_image(manifest_digest)
        layers = oci.manifest_layers(record.manifest)
        diff_ids = oci.config_diff_ids(record.config)
        if len(layers) != len(diff_ids):
            raise StoreError(f"image {manifest_digest} has {len(layers)} layers but {len(diff_ids)} diff_ids")
        docker = record.manifest.get("mediaType") == oci.DOCKER_MANIFEST
        jobs = list(zip(layers, diff_ids, strict=True))
        with ThreadPoolExecutor(max_workers=max(1, min(4, len(jobs)))) as pool:
            shipped = list(pool.map(
                lambda job: self.layer_blob(job[0], job[1], compression, lvl, force=force, docker=docker), jobs))
        if shipped == layers:
            manifest_bytes = self.blobs.read_blob(manifest_digest)
            digest = manifest_digest
            manifest = record.manifest
        else:
            manifest = dict(record.manifest)
            manifest["layers"] = [layer.to_json() for layer in shipped]
            manifest_bytes = oci.canonical_json(manifest)
            digest, _ = self.blobs.put_blob(manifest_bytes)
        config = oci.manifest_config(manifest)
        blobs: dict[str, int] = {digest: len(manifest_bytes), config.digest: config.size}
        for layer in shipped:
            blobs.setdefault(layer.digest, layer.size)
        return Shipment(digest, manifest_bytes, manifest, list(blobs.items()))

    def layer_blob(self, layer: oci.Descriptor, diff_id: str, compression: str, level: int, *,
                   force: bool = False, docker: bool = False) -> oci.Descriptor:
        """The blob to ship for one layer: a base image's own blob unless `force` asks for another
        compression; else (a layer made here, or forced) the cached or new blob in `compression`."""
        info = self.blobs.diff(diff_id)
        made_here = info is not None and info.from_dir and layer.digest == diff_id
        if not made_here and self.lazy is not None and self.lazy.is_lazy(layer.digest):
            # Still in the cache it came from (Store.ship(fetch=False)): it goes out as it is there.
            return layer
        if not made_here and self.blobs.has_blob(layer.digest):
            if not force or oci.layer_compression(layer.media_type) == compression:
                return layer  # a base image's blob stays as it is unless forced, as in BuildKit
        found = self.blobs.variant(diff_id, compression, level)
        if found is None:
            found = self._make_variant(layer, diff_id, compression, level)
        media_type = oci.oci_layer_media_type(compression)
        return oci.Descriptor(oci.OCI_TO_DOCKER_LAYER[media_type] if docker else media_type, found[0], found[1])

    def _make_variant(self, layer: oci.Descriptor, diff_id: str, compression: str, level: int) -> tuple[str, int]:
        if self.blobs.has_blob(layer.digest):
            digest, size = self._recompress(layer, diff_id, compression, level)
        else:
            digest, size = self._compress_dir(diff_id, compression, level)
        self.blobs.record_layer(diff_id, digest, oci.oci_layer_media_type(compression), size)
        self.blobs.record_variant(diff_id, compression, level, digest, size)
        return digest, size

    def _recompress(self, layer: oci.Descriptor, diff_id: str, compression: str, level: int) -> tuple[str, int]:
        """Recompress what the blob holds, checking it is the layer the config names."""
        from builder.layer.compress import open_compressor
        from builder.layer.decompress import open_layer_stream

        with self.blobs.blob_writer() as writer:
            with self.blobs.open_blob(layer.digest) as raw:
                source = HashingReader(open_layer_stream(raw))
                compressor = open_compressor(compression, writer, level=level)
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

    def _compress_dir(self, diff_id: str, compression: str, level: int) -> tuple[str, int]:
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
                with self.blobs.blob_writer(expected) as writer:
                    stream_layer(snapshot, writer, compression=compression, level=level, source_date_epoch=info.epoch,
                                 trusted=Trusted(diff_id, info.signature))
            except TreeChanged:
                pass  # nothing published: written again below, hashed
            else:
                assert writer.digest is not None
                return writer.digest, writer.size
        signature = TreeSignature(info.epoch)
        with self.blobs.blob_writer(expected) as writer:
            # The writer hashes the blob itself: stream_layer does not hash it a second time.
            made, _ = stream_layer(snapshot, writer, compression=compression, level=level,
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


def _check_diff_id(diff_id: str, made: str) -> None:
    if made != diff_id:
        raise StoreError(f"layer {diff_id} now reads as {made}: its content changed in the store",
                         hint="run fsck; remove the image and build or pull it again")
