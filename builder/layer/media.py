"""Layer media types and the digests that describe one written layer."""
from __future__ import annotations

from dataclasses import dataclass

MEDIA_TYPE_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

# Docker schema2 names for the same blobs (docker-archive and registries that want them).
DOCKER_MEDIA_TYPE_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_MEDIA_TYPE_TAR_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_MEDIA_TYPE_TAR_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"

COMPRESSIONS = ("gzip", "zstd", "uncompressed")

MEDIA_TYPE_BY_COMPRESSION = {
    "uncompressed": MEDIA_TYPE_TAR,
    "gzip": MEDIA_TYPE_TAR_GZIP,
    "zstd": MEDIA_TYPE_TAR_ZSTD,
}

_DOCKER_BY_OCI = {
    MEDIA_TYPE_TAR: DOCKER_MEDIA_TYPE_TAR,
    MEDIA_TYPE_TAR_GZIP: DOCKER_MEDIA_TYPE_TAR_GZIP,
    MEDIA_TYPE_TAR_ZSTD: DOCKER_MEDIA_TYPE_TAR_ZSTD,
}


def docker_media_type(oci_media_type: str) -> str:
    """The Docker schema2 media type for an OCI layer media type (identity for Docker types)."""
    if oci_media_type in _DOCKER_BY_OCI.values():
        return oci_media_type
    try:
        return _DOCKER_BY_OCI[oci_media_type]
    except KeyError:
        raise ValueError(f"no Docker media type for layer media type {oci_media_type!r}") from None


@dataclass(frozen=True)
class LayerDigests:
    """What a manifest and a config need to know about one written layer blob."""

    diff_id: str  # "sha256:<hex>" of the uncompressed tar (config rootfs.diff_ids)
    digest: str  # "sha256:<hex>" of the blob as stored (manifest layers[].digest)
    size: int  # size of the blob as stored, in bytes
    media_type: str
