"""Layer tars: deterministic writing, compression, reading and safe extraction.

Layer dirs on disk use the overlay-upper format: a deleted path is a 0/0 character device, an
opaque directory carries the xattr trusted.overlay.opaque=y (user.overlay.opaque=y in a rootless
builder's store, see builder.userns). See docs/ARCHITECTURE.md.
"""
from .applydir import apply_layer, apply_layer_dir
from .decompress import detect_compression, open_layer_stream
from .extract import unpack_layer
from .media import (
    DOCKER_MEDIA_TYPE_TAR,
    DOCKER_MEDIA_TYPE_TAR_GZIP,
    DOCKER_MEDIA_TYPE_TAR_ZSTD,
    MEDIA_TYPE_BY_COMPRESSION,
    MEDIA_TYPE_TAR,
    MEDIA_TYPE_TAR_GZIP,
    MEDIA_TYPE_TAR_ZSTD,
    LayerDigests,
    docker_media_type,
)
from .tarread import LayerEntry, iter_layer_entries
from .tarwrite import OPAQUE_MARKER, WHITEOUT_PREFIX, write_layer

__all__ = [
    "DOCKER_MEDIA_TYPE_TAR",
    "DOCKER_MEDIA_TYPE_TAR_GZIP",
    "DOCKER_MEDIA_TYPE_TAR_ZSTD",
    "MEDIA_TYPE_BY_COMPRESSION",
    "MEDIA_TYPE_TAR",
    "MEDIA_TYPE_TAR_GZIP",
    "MEDIA_TYPE_TAR_ZSTD",
    "OPAQUE_MARKER",
    "WHITEOUT_PREFIX",
    "LayerDigests",
    "LayerEntry",
    "apply_layer",
    "apply_layer_dir",
    "detect_compression",
    "docker_media_type",
    "iter_layer_entries",
    "open_layer_stream",
    "unpack_layer",
    "write_layer",
]
