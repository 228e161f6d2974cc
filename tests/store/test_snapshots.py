"""Snapshot dirs: unpacked layers in overlay-upper format, shared, adopted, verified."""
import hashlib
import os
import stat

import pytest
from storehelpers import build_image, make_tree, put_layer_blob, whiteout

from builder.errors import StoreError
from builder.image import oci
from builder.userns import opaque_xattr


def test_snapshot_dirs_hold_layers_in_upper_format(store, three_layer_image):
    dirs = store.snapshot_dirs("app:1")
    assert [d.parent for d in dirs] == [store.snapshots_dir] * 3
    assert len({d.name for d in dirs}) == 3
    l1, l2, l3 = dirs
    assert (l1 / "a").read_text() == "one\n" and (l1 / "dir/x").read_text() == "x\n"
    st = os.lstat(l2 / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(l2 / "dir", opaque_xattr()) == b"y"
    assert sorted(os.listdir(l2 / "dir")) == ["z"]
    assert sorted(os.listdir(l3)) == ["a"] and (l3 / "a").read_text() == "three\n"
    # Unpacked once: asking again (or through the diff_id) gives the same dir.
    diff_ids = three_layer_image.config["rootfs"]["diff_ids"]
    assert store.snapshot_dir(diff_ids[1]) == l2
    assert store.snapshot_dirs(three_layer_image.config_digest[7:19]) == dirs
    assert list(store.tmp_dir.iterdir()) == []


def test_snapshot_shared_between_images_with_same_layer(store, tmp_path):
    base = make_tree(tmp_path / "base", {"etc/os": "same\n"})
    a = build_image(store, [base], "a", labels={"x": "a"})
    b = build_image(store, [base, make_tree(tmp_path / "b", {"b": "b"})], "b", labels={"x": "b"})
    assert store.snapshot_dirs("a")[0] == store.snapshot_dirs("b")[0]
    assert a.manifest["layers"][0] == b.manifest["layers"][0]


def test_put_layer_from_dir_takes_the_dir_in_without_writing_a_blob(store, tmp_path):
    upper = make_tree(tmp_path / "upper", {"new": "file\n"})
    whiteout(upper / "old")
    digests = store.put_layer_from_dir(upper, source_date_epoch=0)
    assert not upper.exists()
    assert digests.digest == digests.diff_id and digests.media_type == oci.OCI_LAYER_TAR
    assert list(store.blobs_dir.iterdir()) == [], "a build compresses nothing and writes no tar"
    assert store.has_layer(digests.digest)
    snap = store.snapshot_dir(digests.diff_id)
    assert (snap / "new").read_text() == "file\n"
    assert stat.S_ISCHR(os.lstat(snap / "old").st_mode)
    # The tar the dir makes is the one the diff_id names, and its size is the recorded one.
    with store.open_layer_tar(digests.digest) as tar:
        data = tar.read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digests.diff_id and len(data) == digests.size
    # A second dir with the same content is not taken: the existing snapshot is kept.
    again = make_tree(tmp_path / "again", {"new": "file\n"})
    whiteout(again / "old")
    assert store.put_layer_from_dir(again, source_date_epoch=0) == digests
    assert again.exists()
    assert store.snapshot_dir(digests.diff_id) == snap


def test_same_diff_id_two_compressions(store, tmp_path):
    tree = make_tree(tmp_path / "t", {"f": "data\n"})
    gz = put_layer_blob(store, tree, "gzip")
    zs = put_layer_blob(store, tree, "zstd")
    plain = put_layer_blob(store, tree, "uncompressed")
    assert gz.diff_id == zs.diff_id == plain.diff_id == plain.digest
    assert len({gz.digest, zs.digest, plain.digest}) == 3
    snap = store.snapshot_dir(gz.diff_id, zs.digest)
    assert (snap / "f").read_text() == "data\n"


def test_snapshot_of_corrupt_or_unknown_layer(store, tmp_path):
    with pytest.raises(StoreError) as info:
        store.snapshot_dir("sha256:" + "6" * 64)
    assert "is gone from the store" in info.value.message
    digests = put_layer_blob(store, make_tree(tmp_path / "t", {"f": "data\n"}), "uncompressed")
    other = put_layer_blob(store, make_tree(tmp_path / "u", {"g": "other\n"}), "uncompressed")
    # Asking for diff_id A with the blob of B: the unpacked bytes do not hash to A, nothing published.
    with pytest.raises(StoreError) as info:
        store.snapshot_dir(digests.diff_id, other.digest)
    assert "unpacks to" in info.value.message
    assert list(store.snapshots_dir.iterdir()) == []
    assert list(store.tmp_dir.iterdir()) == []
    assert (store.snapshot_dir(digests.diff_id, digests.digest) / "f").read_text() == "data\n"


_KILLED_UNPACKER = """
import sys, time
sys.path.insert(0, {repo!r})
import builder.layer.extract as layerapi
from builder.image.store import Store
real = layerapi.unpack_layer
def slow(stream, dest):
    real(stream, dest)
    print("unpacked into temp", flush=True)
    time.sleep(60)  # killed here: unpacked but not yet published
layerapi.unpack_layer = slow
Store.open({root!r}).snapshot_dir({diff_id!r})
"""


def test_sigkill_while_unpacking_then_next_caller_publishes(store, tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    record = build_image(store, [make_tree(tmp_path / "l", {"f": "data\n"})], "one")
    diff_id = record.config["rootfs"]["diff_ids"][0]
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_UNPACKER.format(
        repo=str(repo), root=str(store.root), diff_id=diff_id)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "unpacked into temp"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(store.snapshots_dir.iterdir()) == []  # nothing half-published
    assert store.fsck() == []
    snap = store.snapshot_dir(diff_id)
    assert (snap / "f").read_text() == "data\n"
    stale = list(store.tmp_dir.iterdir())
    assert len(stale) == 1 and stale[0].name.startswith("snap-")
    old = time.time() - 3600
    os.utime(stale[0], (old, old))
    assert store.gc(min_age=3600).removed_tmp == [stale[0].name]
    assert list(store.tmp_dir.iterdir()) == [] and store.fsck() == []
    assert store.snapshot_dirs("one") == [snap]
