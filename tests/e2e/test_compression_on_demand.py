"""Issue 11: a build never compresses; layers are compressed when they leave the store, in the
compression asked for, once per (layer, compression, level)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import oci_layout_manifest, write_context

import builder
from builder.image import oci
from builder.image.store import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")

BUILDFILE = "FROM busybox\nCOPY data.txt /data.txt\nRUN head -c 4096 /data.txt | sha256sum > /sum\n"
MEDIA_TYPES = {"gzip": oci.OCI_LAYER_GZIP, "zstd": oci.OCI_LAYER_ZSTD, "uncompressed": oci.OCI_LAYER_TAR}


@pytest.fixture
def context(tmp_path: Path) -> Path:
    return write_context(tmp_path / "ctx", {"Buildfile": BUILDFILE, "data.txt": "compressible text\n" * 4000})


def blob_names(store: Store) -> set[str]:
    return {path.name for path in store.blobs_dir.iterdir()}


def test_a_build_writes_no_layer_blob(context: Path, busybox_store) -> None:
    before = blob_names(busybox_store)
    result = builder.build(context, root=busybox_store.root)
    made = [layer for layer in result.manifest["layers"][1:]]
    assert all(layer["mediaType"] == oci.OCI_LAYER_TAR for layer in made)
    assert all(busybox_store.has_layer(layer["digest"]) for layer in made)
    new = blob_names(busybox_store) - before
    assert new == {result.manifest_digest[7:], result.image_id[7:]}, "only the manifest and config are blobs"


@pytest.mark.parametrize("compression", ["gzip", "zstd", "uncompressed"])
def test_the_compression_asked_holds_warm_cache_or_not(tmp_path: Path, context: Path, busybox_store,
                                                      compression: str) -> None:
    # A warm build first (another compression), then the one under test: every step cached.
    builder.build(context, root=busybox_store.root, outputs=[f"type=oci,dest={tmp_path / 'first'},tar=false"])
    layout = tmp_path / "layout"
    result = builder.build(context, root=busybox_store.root, compression=compression,
                           outputs=[f"type=oci,dest={layout},tar=false"])
    assert all(step.cached for step in result.steps[1:])
    shipped = oci_layout_manifest(layout)
    # The base image's blob goes as it is (not forced); the layers made here in the compression asked.
    assert [layer["mediaType"] for layer in shipped["layers"][1:]] == [MEDIA_TYPES[compression]] * 2
    assert shipped["config"]["digest"] == result.image_id, "the same image whatever the compression"
    # Only uncompressed layers ship the local manifest itself.
    assert (dict(result.exported)[f"type=oci,dest={layout},tar=false"] == result.manifest_digest) == \
        (compression == "uncompressed")


def test_an_output_may_ask_for_its_own_compression_and_force_it(tmp_path: Path, context: Path, busybox_store) -> None:
    gz, zs = tmp_path / "gz", tmp_path / "zs"
    result = builder.build(context, root=busybox_store.root, outputs=[
        f"type=oci,dest={gz},tar=false", f"type=oci,dest={zs},tar=false,compression=zstd,force-compression=true"])
    assert {layer["mediaType"] for layer in oci_layout_manifest(gz)["layers"][1:]} == {oci.OCI_LAYER_GZIP}
    # Forced: the base layer is recompressed too.
    assert {layer["mediaType"] for layer in oci_layout_manifest(zs)["layers"]} == {oci.OCI_LAYER_ZSTD}
    assert oci_layout_manifest(gz)["config"] == oci_layout_manifest(zs)["config"]
    assert len(result.exported) == 2


def test_exporting_twice_compresses_once(tmp_path: Path, context: Path, busybox_store, monkeypatch) -> None:
    import builder.layer.compress as compress
    import builder.layer.tarwrite as tarwrite

    calls: list[str] = []
    real = compress.open_compressor

    def counted(kind, *args, **kwargs):
        calls.append(kind)
        return real(kind, *args, **kwargs)

    monkeypatch.setattr(compress, "open_compressor", counted)
    monkeypatch.setattr(tarwrite, "open_compressor", counted)
    result = builder.build(context, root=busybox_store.root, outputs=[f"type=oci,dest={tmp_path / 'one.tar'}"])
    first = calls.count("gzip")
    # Every layer made here (the imported base's too) is compressed once.
    assert first == len(result.manifest["layers"]) == 3
    builder.build(context, root=busybox_store.root, outputs=[f"type=oci,dest={tmp_path / 'two.tar'}"])
    assert calls.count("gzip") == first, "the second export takes the kept blobs"
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()


def test_a_rerun_step_with_the_same_output_keeps_one_copy(context: Path, busybox_store) -> None:
    # The epoch makes the rerun's files the same to the second: the same layers.
    builder.build(context, root=busybox_store.root, source_date_epoch=1)
    snapshots = sorted(path.name for path in busybox_store.snapshots_dir.iterdir())
    blobs = blob_names(busybox_store)
    again = builder.build(context, root=busybox_store.root, no_cache=True, source_date_epoch=1)
    assert not any(step.cached for step in again.steps[1:])
    assert sorted(path.name for path in busybox_store.snapshots_dir.iterdir()) == snapshots
    assert blob_names(busybox_store) == blobs, "the same layers, the same manifest: nothing new on disk"


def test_docker_archive_and_save_write_layers_made_here(tmp_path: Path, context: Path, busybox_store) -> None:
    archive = tmp_path / "image.docker.tar"
    result = builder.build(context, root=busybox_store.root, tags=["made:1"], outputs=[f"type=docker,dest={archive}"])
    fresh = Store.open(tmp_path / "fresh")
    from builder.image.importer import load_archive

    loaded = load_archive(fresh, archive)
    record = fresh.load_image(loaded[0][1])
    assert record.config_digest == result.image_id
    assert json.loads(fresh.read_blob(record.config_digest))["rootfs"] == result.config["rootfs"]


def test_a_layer_changed_in_its_store_dir_is_refused_by_the_cli(tmp_path: Path, store_root: Path, capsys) -> None:
    """The export does not hash an unchanged layer's tar again, so a write into a snapshot after
    the build (same size, mtime put back) must still stop it: exit 1, a message, no output."""
    from builder.cli import main as cli_main

    context = write_context(tmp_path / "ctx", {"Buildfile": "FROM scratch\nCOPY app.conf /etc/app.conf\n",
                                                "app.conf": "mode=safe\n"})
    first = tmp_path / "first.tar"
    args = ["--root", str(store_root), "build", "--progress", "quiet", "-t", "app:1", str(context)]
    assert cli_main([*args, "-o", f"type=oci,dest={first},compression=zstd"]) == 0
    store = Store.open(store_root)
    diff_id = store.load_image("app:1").config["rootfs"]["diff_ids"][0]
    target = store.snapshot_dir(diff_id) / "etc/app.conf"
    before = os.lstat(target)
    target.write_text("mode=evil\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    capsys.readouterr()
    out = tmp_path / "out.tar"
    assert cli_main([*args, "-o", f"type=oci,dest={out},compression=gzip"]) == 1
    err = capsys.readouterr().err
    assert f"layer {diff_id} now reads as" in err and "changed in the store" in err and "hint: run fsck" in err
    assert not out.exists() and not list(tmp_path.glob(".out.tar.*"))
    assert Store.open(store_root).blobs.variant(diff_id, "gzip", 6) is None
