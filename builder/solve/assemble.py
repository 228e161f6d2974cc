"""The built image: its final state written to the store as an OCI config and manifest."""
from __future__ import annotations

from typing import Any, Mapping

from builder.image import oci
from builder.image.store import Store
from builder.platforms import Platform
from builder.solve.options import BuildOptions
from builder.solve.state import ImageState


def assemble_image(
    store: Store, state: ImageState, options: BuildOptions, created: str,
    annotations: Mapping[str, str] | None = None,
) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    """Write config and manifest blobs; returns (config digest, config, manifest digest, manifest).
    `annotations` go into the manifest (an inline build cache), never into the config: the
    image ID does not depend on them."""
    runtime = state.runtime_config()
    if options.labels:
        runtime["Labels"] = {**(runtime.get("Labels") or {}), **options.labels}
    config = oci.image_config(
        runtime,
        platform=Platform(os=state.os, architecture=state.architecture, variant=state.variant),
        created=created,
        diff_ids=[layer.diff_id for layer in state.layers],
        history=state.history,
        author=state.author or None,
    )
    layers = [oci.Descriptor(layer.media_type, layer.digest, layer.size) for layer in state.layers]
    manifest = oci.make_manifest_for_config(config, layers,
                                            {**(annotations or {}), "org.opencontainers.image.created": created})
    record = store.save_image(manifest, config)
    return record.config_digest, config, record.manifest_digest, manifest
