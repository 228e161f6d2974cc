"""Media types the registry client understands: the store's (builder.image.oci), grouped for pulls."""
from __future__ import annotations

from builder.image.oci import (
    CONFIG_TYPES as CONFIGS,
)
from builder.image.oci import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from builder.image.oci import (
    INDEX_TYPES as INDEXES,
)
from builder.image.oci import (
    LAYER_TYPES as LAYERS,
)
from builder.image.oci import (
    MANIFEST_TYPES as IMAGE_MANIFESTS,
)

__all__ = ["CONFIGS", "IMAGE_MANIFESTS", "INDEXES", "LAYERS", "MANIFEST_ACCEPT", "OCI_INDEX", "OCI_MANIFEST"]

# What we accept when asking for a manifest, best first.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
