"""Image records, tags, lookups, the step cache, gc and fsck."""
import os

import pytest
from storehelpers import build_image, make_tree

from builder.errors import ImageNotFound, StoreError
from builder.image import oci
from builder.image.store import Store, default_root


def empty_image(store, label: str, tag: str | None = None):
    config = oci.make_image_config(platform=oci.Platform(), labels={"n": label})
    record = store.save_image(oci.make_manifest_for_config(config, []), config)
    if tag:
        store.tag(tag, record.manifest_digest)
    return record


def test_store_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("BUILDER_ROOT", str(tmp_path / "env-root"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Store.open().root == tmp_path / "env-root"
    assert Store.open(tmp_path / "arg").root == tmp_path / "arg"
    monkeypatch.delenv("BUILDER_ROOT")
    assert Store.open().root == tmp_path / "xdg" / "builder"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".local" / "share" / "builder"
    root = tmp_path / "arg"
    assert {"blobs", "index.db", "locks", "s", "tmp"} <= {p.name for p in root.iterdir()}


def test_save_and_load_by_tag_digest_and_id(store, tmp_path):
    record = build_image(store, [make_tree(tmp_path / "l", {"f": "x"})], "myapp")
    manifest_digest, config_digest = record.manifest_digest, record.config_digest
    assert store.read_blob(manifest_digest) == oci.canonical_json(record.manifest)
    assert store.read_blob(config_digest) == oci.canonical_json(record.config)
    hexid = config_digest[7:]
    for ref in ["myapp", "myapp:latest", "docker.io/library/myapp", "docker.io/library/myapp:latest",
                manifest_digest, config_digest, hexid, hexid[:12], hexid[:4], "sha256:" + hexid[:10],
                f"myapp@{manifest_digest}"]:
        loaded = store.load_image(ref)
        assert loaded.manifest_digest == manifest_digest, ref
        assert loaded.config == record.config
        assert loaded.tags == ["myapp:latest"]
    assert record.short_id == hexid[:12]


def test_not_found_and_ambiguous(store):
    a = empty_image(store, "a", "a:1")
    with pytest.raises(ImageNotFound) as info:
        store.load_image("nothere:1")
    assert "nothere:1" in info.value.message and "a:1" in info.value.hint
    with pytest.raises(ImageNotFound):
        store.load_image("sha256:" + "0" * 64)
    # Find two images whose IDs share a first hex digit to make a prefix ambiguous.
    records = [a] + [empty_image(store, str(i)) for i in range(40)]
    by_first: dict[str, list[str]] = {}
    for r in records:
        by_first.setdefault(r.config_digest[7], []).append(r.config_digest)
    prefix = next(k for k, v in by_first.items() if len(set(v)) > 1)
    with pytest.raises(ImageNotFound) as info:
        store.load_image(prefix)
    assert "ambiguous" in info.value.message


def test_save_image_checks_config_descriptor_and_layers(store):
    config = oci.make_image_config()
    manifest = oci.make_manifest_for_config(config, [])
    manifest["config"]["digest"] = "sha256:" + "1" * 64
    with pytest.raises(StoreError):
        store.save_image(manifest, config)
    config = oci.make_image_config(diff_ids=["sha256:" + "2" * 64])
    layer = oci.Descriptor(oci.OCI_LAYER_GZIP, "sha256:" + "3" * 64, 10)
    with pytest.raises(StoreError) as info:
        store.save_image(oci.make_manifest_for_config(config, [layer]), config)
    assert "missing" in info.value.message
    assert store.images() == []


def test_tags_untag_retag(store):
    a = empty_image(store, "a")
    b = empty_image(store, "b")
    assert store.tag("app", a.manifest_digest) == "app:latest"
    store.tag("localhost:5000/app:v1", a.manifest_digest)
    assert store.tags() == [("app:latest", a.manifest_digest), ("localhost:5000/app:v1", a.manifest_digest)]
    store.tag("docker.io/library/app:latest", b.manifest_digest)  # moves the tag
    assert store.load_image("app").manifest_digest == b.manifest_digest
    assert store.untag("app") is True
    assert store.untag("app") is False
    assert store.tags() == [("localhost:5000/app:v1", a.manifest_digest)]
    with pytest.raises(ImageNotFound):
        store.tag("x", "sha256:" + "4" * 64)
    assert {r.manifest_digest for r in store.images()} == {a.manifest_digest, b.manifest_digest}


def test_delete_image(store):
    a = empty_image(store, "a", "one")
    store.tag("two", a.manifest_digest)
    assert store.delete_image("one") == ["Untagged: one:latest"]
    with pytest.raises(StoreError) as info:
        store.delete_image(a.manifest_digest)
    assert "two:latest" in info.value.message
    assert store.delete_image("two") == ["Untagged: two:latest", f"Deleted: {a.manifest_digest}"]
    assert store.images() == []
    b = empty_image(store, "b", "three")
    assert store.delete_image(b.config_digest[7:19], force=True) == ["Untagged: three:latest",
                                                                     f"Deleted: {b.manifest_digest}"]


def test_cache_get_put_prune(store):
    assert store.cache_get("step") is None
    store.cache_put("step", {"layer": "sha256:" + "5" * 64, "n": [1, 2]})
    assert store.cache_get("step") == {"layer": "sha256:" + "5" * 64, "n": [1, 2]}
    store.cache_put("step", {"n": 3})
    assert store.cache_get("step") == {"n": 3}
    reopened = Store.open(store.root)
    assert reopened.cache_get("step") == {"n": 3}
    assert store.cache_prune(unused_for=3600) == 0
    assert store.cache_prune(unused_for=-1) == 1
    assert store.cache_get("step") is None


def test_gc_removes_only_unreferenced(store, tmp_path):
    kept = build_image(store, [make_tree(tmp_path / "k", {"keep": "1"})], "kept")
    dropped = build_image(store, [make_tree(tmp_path / "d", {"drop": "2"})], "dropped")
    cached_layer = store.put_layer_from_dir(make_tree(tmp_path / "c", {"cached": "3"}))
    store.cache_put("run step", {"diff_id": cached_layer.diff_id})
    stray, _ = store.put_blob(b"stray")
    for ref in ("kept", "dropped"):
        store.snapshot_dirs(ref)
    store.delete_image("dropped")

    assert store.gc(min_age=3600).removed_blobs == []  # everything is young: protected
    result = store.gc(min_age=0)
    dropped_blobs = {dropped.manifest_digest, dropped.config_digest, dropped.manifest["layers"][0]["digest"]}
    assert set(result.removed_blobs) == dropped_blobs | {stray}
    assert result.removed_snapshots == [dropped.config["rootfs"]["diff_ids"][0]]
    # A layer made here that a cache entry names (through its diff_id) keeps its snapshot: its only copy.
    assert store.has_layer(cached_layer.digest) and store.has_snapshot(cached_layer.diff_id)
    for digest in (kept.manifest_digest, kept.config_digest, kept.manifest["layers"][0]["digest"]):
        assert store.has_blob(digest)
    kept_snapshot = store.snapshot_dirs("kept")[0]
    cached_snapshot = store.snapshot_dir(cached_layer.diff_id)
    assert sorted(p.name for p in store.snapshots_dir.iterdir()) == sorted([kept_snapshot.name, cached_snapshot.name])
    assert store.fsck() == []


def test_fsck_finds_corruption_and_dangling_references(store, tmp_path):
    record = build_image(store, [make_tree(tmp_path / "l", {"f": "x"})], "app")
    assert store.fsck() == []
    layer_digest = record.manifest["layers"][0]["digest"]
    path = store.blob_path(layer_digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"garbage")
    problems = store.fsck()
    assert any(layer_digest in p and "corrupt" in p for p in problems)
    path.unlink()
    store.blob_path(record.config_digest).unlink()
    problems = store.fsck()
    assert any(f"layer blob {layer_digest} missing" in p for p in problems)
    assert any(f"config blob {record.config_digest} missing" in p for p in problems)
    (store.blobs_dir / "not-a-digest").write_text("x")
    (store.snapshots_dir / "99").mkdir()
    problems = store.fsck()
    assert "stray entry in blobs/sha256: not-a-digest" in problems
    assert "snapshot dir s/99 has no index entry" in problems


def test_unusable_root_is_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(StoreError) as info:
        Store.open(blocker / "store")
    assert "cannot create the store" in info.value.message and "BUILDER_ROOT" in info.value.hint
