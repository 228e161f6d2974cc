"""`--cache-to`: write the build's steps as a cache record to a registry or an OCI layout dir,
or (`type=inline`) into the image's own manifest.

`mode=min` writes the steps of the final image (the target stage and the stages it is built
FROM); `mode=max` every step of every stage the build ran. A layer goes out as the image's own
push would send it: a layer made here compressed as asked (the same variant blob an image push of
that compression uses, made once), a pulled or cached layer as the blob it already is. So the
cache and the image share their blobs: whichever is pushed second finds them in place (same
repository) or mounts them (same registry), never uploads them again.

The record is written last, and in one piece: a manifest PUT by tag, or an index.json renamed
into place. Two builds exporting to one ref at once leave one of the two records, each whole.
"""
from __future__ import annotations

import functools
import io
from dataclasses import replace
from typing import Iterable, Mapping, Sequence

from builder.cache.layout import Layout, LayoutError, copy_stream
from builder.cache.record import ARTIFACT_TYPE, CacheRecord, RecordLayer, entries_from_steps
from builder.cache.spec import CacheSpec
from builder.image import oci
from builder.image.store import Store


def inline_annotation(steps: Sequence[tuple[str, Mapping]]) -> str:
    """The inline record of an image (its layers named by diff_id: they are the image's own)."""
    return CacheRecord(entries_from_steps(steps)).inline_annotation()


def export_cache(store: Store, spec: CacheSpec, steps: Sequence[tuple[str, Mapping]], *,
                 insecure: Iterable[str] = ()) -> str:
    """Write the record of `steps` where `spec` says; returns the record manifest's digest."""
    record = _shipped_record(store, spec, steps)
    config = record.config_bytes()
    manifest_bytes = oci.canonical_json(record.manifest(config))
    if spec.type == "registry":
        _to_registry(store, spec, record, config, manifest_bytes, insecure)
    else:
        _to_layout(store, spec, record, config, manifest_bytes)
    return oci.sha256_digest(manifest_bytes)


def _shipped_record(store: Store, spec: CacheSpec, steps: Sequence[tuple[str, Mapping]]) -> CacheRecord:
    entries = entries_from_steps(steps)
    shipped: dict[str, RecordLayer] = {}
    for key, entry in sorted(entries.items()):
        layer = entry.layer
        if layer is None:
            continue
        if layer.digest not in shipped:
            blob = store.ship_layer(layer.descriptor(), layer.diff_id, compression=spec.compression or "gzip",
                                    level=spec.compression_level, force=spec.force_compression)
            shipped[layer.digest] = RecordLayer(blob.digest, layer.diff_id, blob.size, blob.media_type)
        entries[key] = replace(entry, layer=shipped[layer.digest])
    return CacheRecord(entries)


def _to_registry(store: Store, spec: CacheSpec, record: CacheRecord, config: bytes, manifest_bytes: bytes,
                 insecure: Iterable[str]) -> None:
    from builder.image.reference import parse_reference
    from builder.registry import RegistryClient
    from builder.registry.client import push_scope
    from builder.registry.sources import known_sources, remember_source

    assert spec.ref is not None
    reference = parse_reference(spec.ref)
    registry, repository = reference.registry, reference.repository
    hosts = tuple(insecure) + ((registry,) if spec.insecure else ())
    client = RegistryClient(registry, insecure=hosts)
    for layer in record.layers():
        digest = layer.digest
        if client.blob_exists(repository, digest, scopes=[push_scope(repository)]):
            remember_source(store, digest, registry, repository)
            continue
        mounted = any(client.mount_blob(repository, digest, source)
                      for reg, source in known_sources(store, digest) if reg == registry and source != repository)
        if not mounted:
            client.upload_blob(repository, digest, layer.size, functools.partial(store.open_blob, digest))
        remember_source(store, digest, registry, repository)
    config_digest = oci.sha256_digest(config)
    if not client.blob_exists(repository, config_digest, scopes=[push_scope(repository)]):
        client.upload_blob(repository, config_digest, len(config), lambda: io.BytesIO(config))
    client.put_manifest(repository, reference.tag_or_latest(), manifest_bytes, oci.OCI_MANIFEST)


def _to_layout(store: Store, spec: CacheSpec, record: CacheRecord, config: bytes, manifest_bytes: bytes) -> None:
    assert spec.path is not None
    layout = Layout(spec.path)
    for layer in record.layers():
        def fill(out, digest=layer.digest) -> None:  # noqa: ANN001
            with store.open_blob(digest) as source:
                copy_stream(source, out)

        layout.write_blob(layer.digest, fill)
    layout.write_blob(oci.sha256_digest(config), lambda out: out.write(config))
    manifest_digest = oci.sha256_digest(manifest_bytes)
    layout.write_blob(manifest_digest, lambda out: out.write(manifest_bytes))
    layout.write_top("oci-layout", oci.canonical_json({"imageLayoutVersion": oci.LAYOUT_VERSION}))
    try:
        kept = [entry for entry in layout.read_index().get("manifests") or []
                if isinstance(entry, dict)
                and (entry.get("annotations") or {}).get(oci.ANNOTATION_REF_NAME) != spec.tag]
    except LayoutError:
        kept = []  # no index yet, or one we cannot read: ours replaces it
    entry = {"mediaType": oci.OCI_MANIFEST, "artifactType": ARTIFACT_TYPE, "digest": manifest_digest,
             "size": len(manifest_bytes), "annotations": {oci.ANNOTATION_REF_NAME: spec.tag}}
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [*kept, entry]}
    layout.write_top("index.json", oci.canonical_json(index))
