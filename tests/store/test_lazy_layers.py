"""Lazy layers: an image may name a layer blob that stays in a cache (here an OCI layout dir)
until something reads it; the bytes are then fetched and must be the layer the cache claimed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from storehelpers import make_tree

from builder.errors import StoreError
from builder.image import oci
from builder.image.store import Store
from builder.layer import write_layer


def _layer_in_layout(layout: Path, tree: Path) -> oci.Descriptor:
    """A gzip layer blob written into `layout`/blobs/sha256 (as a local cache export leaves it)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    temp = layout / "layer.tmp"
    with open(temp, "wb") as out:
        digests = write_layer(tree, out, compression="gzip", source_date_epoch=0)
    temp.rename(blobs / digests.digest.removeprefix("sha256:"))
    return oci.Descriptor(digests.media_type, digests.digest, digests.size, annotations={"diff_id": digests.diff_id})


def _image(store: Store, layer: oci.Descriptor, diff_id: str) -> str:
    config = oci.make_image_config(platform=oci.Platform("linux", "amd64"), created="1970-01-01T00:00:00Z")
    oci.add_layer(config, diff_id, "from a cache", created="1970-01-01T00:00:00Z")
    plain = oci.Descriptor(layer.media_type, layer.digest, layer.size)
    return store.save_image(oci.make_manifest_for_config(config, [plain]), config).manifest_digest


@pytest.fixture
def cached_layer(tmp_path: Path) -> tuple[Path, oci.Descriptor, str]:
    layout = tmp_path / "cache"
    layer = _layer_in_layout(layout, make_tree(tmp_path / "tree", {"etc/greeting": "hello from the cache\n"}))
    return layout, layer, layer.annotations["diff_id"]  # type: ignore[index]


def test_an_image_names_a_lazy_layer_and_its_bytes_come_when_first_read(store: Store, cached_layer) -> None:
    layout, layer, diff_id = cached_layer
    store.note_lazy_layer(layer.digest, diff_id=diff_id, media_type=layer.media_type, size=layer.size,
                          origin={"type": "oci-layout", "path": str(layout)})
    manifest_digest = _image(store, layer, diff_id)
    assert not store.has_blob(layer.digest) and store.is_lazy(layer.digest), "saving the image fetched nothing"
    assert store.fsck() == []

    [snapshot] = store.snapshot_dirs(manifest_digest)
    assert (snapshot / "etc/greeting").read_text() == "hello from the cache\n"
    assert store.has_blob(layer.digest) and not store.is_lazy(layer.digest)
    assert store.layer_diff_id(layer.digest) == diff_id
    assert store.fsck() == []


def test_a_push_style_ship_leaves_lazy_layers_where_they_are(store: Store, cached_layer) -> None:
    layout, layer, diff_id = cached_layer
    store.note_lazy_layer(layer.digest, diff_id=diff_id, media_type=layer.media_type, size=layer.size,
                          origin={"type": "oci-layout", "path": str(layout)})
    manifest_digest = _image(store, layer, diff_id)
    shipped = store.ship(manifest_digest, compression="zstd", fetch=False)
    assert shipped.manifest["layers"][0]["digest"] == layer.digest  # the cache's blob, as it is there
    assert store.is_lazy(layer.digest)
    exported = store.ship(manifest_digest, compression="zstd")  # an export that writes the bytes
    assert exported.manifest["layers"][0]["digest"] == layer.digest
    assert store.has_blob(layer.digest)


def test_a_blob_that_is_not_the_claimed_layer_is_refused_when_fetched(store: Store, cached_layer, tmp_path) -> None:
    layout, layer, _diff_id = cached_layer
    claimed = "sha256:" + "ab" * 32
    store.note_lazy_layer(layer.digest, diff_id=claimed, media_type=layer.media_type, size=layer.size,
                          origin={"type": "oci-layout", "path": str(layout)})
    manifest_digest = _image(store, layer, claimed)
    with pytest.raises(StoreError, match="claims"):
        store.snapshot_dirs(manifest_digest)
    assert not store.is_lazy(layer.digest)
    with pytest.raises(StoreError, match="unpacks to"):  # and the claim is not believed the second time
        store.snapshot_dirs(manifest_digest)


def test_a_link_inside_the_cache_dir_is_never_followed(store: Store, cached_layer, tmp_path) -> None:
    layout, layer, diff_id = cached_layer
    elsewhere = tmp_path / "elsewhere"
    (layout / "blobs").rename(elsewhere)
    os.symlink(elsewhere, layout / "blobs")
    store.note_lazy_layer(layer.digest, diff_id=diff_id, media_type=layer.media_type, size=layer.size,
                          origin={"type": "oci-layout", "path": str(layout)})
    manifest_digest = _image(store, layer, diff_id)
    with pytest.raises(StoreError, match="cannot fetch layer"):
        store.snapshot_dirs(manifest_digest)
    assert not store.has_blob(layer.digest)


def test_gc_forgets_lazy_layers_no_image_names(store: Store, cached_layer, tmp_path) -> None:
    layout, layer, diff_id = cached_layer
    other = _layer_in_layout(layout, make_tree(tmp_path / "tree2", {"other": "x\n"}))
    origin = {"type": "oci-layout", "path": str(layout)}
    store.note_lazy_layer(layer.digest, diff_id=diff_id, media_type=layer.media_type, size=layer.size, origin=origin)
    store.note_lazy_layer(other.digest, diff_id=other.annotations["diff_id"], media_type=other.media_type,  # type: ignore[index]
                          size=other.size, origin=origin)
    _image(store, layer, diff_id)
    store.gc(min_age=0)
    assert store.is_lazy(layer.digest)
    assert not store.is_lazy(other.digest)
