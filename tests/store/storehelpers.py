"""Helpers for the store/export tests (imported by name: pytest puts this dir on sys.path): layer dirs in overlay-upper format and images built from them."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Sequence

from builder.image import oci
from builder.image.store import ImageRecord, Store
from builder.layer import write_layer
from builder.userns import opaque_xattr


def whiteout(path: Path) -> None:
    """A deletion in overlay-upper format: a 0/0 character device."""
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def opaque(path: Path) -> None:
    os.setxattr(path, opaque_xattr(), b"y")


def make_tree(root: Path, files: dict[str, str | None]) -> Path:
    """Files (text) and dirs (value None, name ending in '/') under root, fixed mtimes."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content or "")
        os.chmod(path, 0o644)
    return root


def put_layer_blob(store: Store, layer_dir: Path, compression: str = "gzip"):
    """A layer as a stored (compressed) blob, as a pull or a load leaves it; the dir stays as it is."""
    with store.blob_writer(layer=True) as writer:
        digests = write_layer(layer_dir, writer, compression=compression, source_date_epoch=0)
    return digests


def build_image(store: Store, layer_dirs: Sequence[Path], tag: str | None = None, *,
                compression: str | None = "gzip", cmd: Sequence[str] | None = ("/bin/sh",),
                labels: dict[str, str] | None = None) -> ImageRecord:
    """An image of these layer dirs: as compressed blobs (like a pulled image), or with
    compression=None as layers made here (the dirs are taken in as snapshots, as a build does)."""
    layers = []
    config = oci.make_image_config(platform=oci.Platform("linux", "amd64"), created="1970-01-01T00:00:00Z",
                                   cmd=cmd, labels=labels)
    for i, layer_dir in enumerate(layer_dirs):
        if compression is None:
            digests = store.put_layer_from_dir(layer_dir, source_date_epoch=0)
        else:
            digests = put_layer_blob(store, layer_dir, compression)
        layers.append(oci.Descriptor(digests.media_type, digests.digest, digests.size))
        oci.add_layer(config, digests.diff_id, f"layer {i}", created="1970-01-01T00:00:00Z")
    record = store.save_image(oci.make_manifest_for_config(config, layers), config)
    if tag:
        store.tag(tag, record.manifest_digest)
    return store.load_image(record.manifest_digest)


def store_state(store: Store) -> tuple:
    """Everything visible in a store: blob names, images, tags, snapshots (for 'unchanged' checks)."""
    blobs = sorted(p.name for p in store.blobs_dir.iterdir())
    images = sorted((r.manifest_digest, r.config_digest) for r in store.images())
    snaps = sorted(p.name for p in store.snapshots_dir.iterdir())
    return blobs, images, store.tags(), snaps
