"""Export images in the `docker save` format (docker-archive), for `docker load` and skopeo.

    manifest.json          [{"Config": "<hex>.json", "RepoTags": [...], "Layers": ["<diff hex>/layer.tar", ...]}]
    repositories           {"name": {"tag": "<top layer id>"}}  (legacy, still read by old tools)
    <config hex>.json      the config blob, bytes unchanged (so the image ID stays the same)
    <diff_id hex>/layer.tar  each layer uncompressed, named by its diff_id, written once

The config is copied byte for byte; layers are decompressed on the fly (twice for compressed
ones: once to learn the size the tar header needs and check the diff_id, once to copy), and a
layer the builder made is written from its snapshot dir as it is copied (its size is known).
"""
from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path
from typing import BinaryIO, Sequence

from builder.errors import OutputError
from builder.export.tarout import TarPlan, atomic_output_file
from builder.image import oci
from builder.image.reference import InvalidReference, normalize_tag, split_tag
from builder.image.store import Store
from builder.progress import Transfer

_CHUNK = 1 << 20


def _uncompressed_size(store: Store, blob_digest: str, diff_id: str) -> int:
    """The tar's size, which the archive's header needs before the bytes: known when the store
    hashed the blob (the pair is trusted then), else learnt by reading it once, checking the diff_id."""
    known = store.blobs.diff(diff_id)
    if known is not None:
        return known.size
    from builder.layer.decompress import open_layer_stream

    hasher = hashlib.sha256()
    size = 0
    with store.open_blob(blob_digest) as raw:
        stream = open_layer_stream(raw)
        while chunk := stream.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    if "sha256:" + hasher.hexdigest() != diff_id:
        raise OutputError(f"layer {blob_digest} does not decompress to its diff_id {diff_id}",
                          hint="the store is corrupt; run fsck")
    return size


class _DecompressedBlob:
    """Context manager giving the uncompressed stream of a layer blob."""

    def __init__(self, store: Store, digest: str) -> None:
        self._store, self._digest = store, digest
        self._raw: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        from builder.layer.decompress import open_layer_stream

        self._raw = self._store.open_blob(self._digest)
        return open_layer_stream(self._raw)

    def __exit__(self, *exc: object) -> None:
        if self._raw is not None:
            self._raw.close()


def export_docker_archive(store: Store, images: Sequence[tuple[str, Sequence[str]]], dest: Path | str,
                          *, mtime: int = 0, transfer: Transfer | None = None) -> None:
    """Write `images` ((manifest digest, tags) pairs) as one docker-archive tar at `dest` ("-": stdout);
    `transfer` is told the bytes as they are written."""
    plan = TarPlan(mtime=mtime)
    manifest_entries: list[dict] = []
    repositories: dict[str, dict[str, str]] = {}
    for manifest_digest, tags in images:
        store.fetch_image_layers(manifest_digest)  # layers still in a build cache: the archive needs their bytes
        manifest = store.read_json(manifest_digest)
        config_desc = oci.manifest_config(manifest)
        if not store.has_blob(config_desc.digest):
            raise OutputError(f"cannot export image {manifest_digest}: config blob missing")
        config = store.read_json(config_desc.digest)
        layers = oci.manifest_layers(manifest)
        diff_ids = oci.config_diff_ids(config)
        if len(layers) != len(diff_ids):
            raise OutputError(f"image {manifest_digest} has {len(layers)} layers but {len(diff_ids)} diff_ids")
        config_name = config_desc.digest.removeprefix("sha256:") + ".json"
        config_path = store.blob_path(config_desc.digest)
        plan.add_path(config_name, config_path)
        layer_names = []
        for layer, diff_id in zip(layers, diff_ids, strict=True):
            name = diff_id.removeprefix("sha256:") + "/layer.tar"
            layer_names.append(name)
            if name in plan:
                continue
            if not store.has_layer(layer.digest):
                raise OutputError(f"cannot export image {manifest_digest}: layer {layer.digest} is missing",
                                  hint="run fsck on the store; pull or rebuild the image")
            if not store.has_blob(layer.digest):
                # A layer made here: its tar is written from its snapshot dir while it is copied.
                plan.add_file(name, layer.size, partial(store.open_layer_tar, layer.digest, diff_id))
            elif oci.layer_compression(layer.media_type) == "uncompressed" and layer.digest == diff_id:
                plan.add_path(name, store.blob_path(layer.digest))
            else:
                size = _uncompressed_size(store, layer.digest, diff_id)
                plan.add_file(name, size, partial(_DecompressedBlob, store, layer.digest))
        repo_tags = []
        for tag in tags:
            try:
                normal = normalize_tag(tag)
            except InvalidReference as exc:
                raise OutputError(f"invalid image name {tag!r}: {exc.message}", hint=exc.hint) from exc
            repo_tags.append(normal)
            if layer_names:
                repo, tag_part = split_tag(normal)
                repositories.setdefault(repo, {})[tag_part] = layer_names[-1].split("/")[0]
        manifest_entries.append({"Config": config_name, "RepoTags": repo_tags or None, "Layers": layer_names})
    plan.add_bytes("manifest.json", oci.canonical_json(manifest_entries))
    if repositories:
        plan.add_bytes("repositories", oci.canonical_json(repositories))
    with atomic_output_file(dest) as out:
        plan.write(out, transfer)
