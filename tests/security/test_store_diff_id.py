"""Issue 10, item 3: a config may not pass one layer off as another by claiming its diff_id.

A crafted image whose config claims busybox's diff_id for an attacker's layer must be refused by
`load` and by a pull, leaving nothing recorded, so a later `FROM busybox` build and what it
exports are busybox's; fsck re-hashes the blob -> diff_id pairs the store keeps.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import sqlite3
import tarfile
from pathlib import Path

import pytest

import builder
from builder.cli import main as cli_main
from builder.errors import ArchiveError, RegistryError
from builder.image.importer import load_archive
from builder.image.store import Store

EVIL_FILES = {"bin/busybox": b"#!/bin/sh\necho pwned\n", "etc/pwned": b"the attacker was here\n"}


@pytest.fixture
def busybox_store(store, busybox_tar, tmp_path_factory):
    """busybox:latest as a pull or a load leaves it: its layer a gzip blob the store keeps
    (a build or an import would keep a snapshot dir instead, and there would be no blob to swap)."""
    from builder.export.oci_layout import export_oci
    from builder.image.importer import import_rootfs

    seed = Store.open(tmp_path_factory.mktemp("seed") / "store")
    import_rootfs(seed, busybox_tar, "busybox:latest")
    archive = tmp_path_factory.mktemp("seed-oci") / "busybox.oci.tar"
    export_oci(seed, seed.resolve("busybox:latest"), archive, tags=["busybox:latest"])
    load_archive(store, archive)
    assert store.has_blob(store.load_image("busybox:latest").manifest["layers"][0]["digest"])
    return store


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def evil_layer() -> tuple[bytes, bytes]:
    """(plain tar, gzip blob) of the attacker's layer."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(EVIL_FILES.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 1577836800
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue(), gzip.compress(raw.getvalue(), mtime=0)


def busybox_facts(store: Store) -> tuple[str, str, dict]:
    """(layer blob digest, diff_id, config) of busybox:latest."""
    record = store.load_image("busybox:latest")
    return record.manifest["layers"][0]["digest"], record.config["rootfs"]["diff_ids"][0], record.config


def lying_image(claimed_diff_id: str, base_config: dict) -> tuple[bytes, bytes, bytes, bytes]:
    """(layer blob, config, OCI manifest, plain layer tar): the attacker's layer, a config claiming
    `claimed_diff_id` for it."""
    plain, blob = evil_layer()
    config = json.dumps({
        "architecture": base_config["architecture"], "os": base_config["os"],
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [claimed_diff_id]},
        "history": [{"created_by": "innocent-looking busybox"}],
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(blob),
                    "size": len(blob)}],
    }).encode()
    return blob, config, manifest, plain


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_crafted_archive(path: Path, kind: str, claimed_diff_id: str, base_config: dict) -> str:
    """A tar archive of kind "oci", "docker" (classic `docker save`) or "docker25" (docker save
    since v25: manifest.json beside an OCI layout). Returns the attacker's layer blob digest."""
    blob, config, manifest, plain = lying_image(claimed_diff_id, base_config)
    with tarfile.open(path, "w") as tar:
        if kind in ("oci", "docker25"):
            _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            _add(tar, "index.json", json.dumps({"schemaVersion": 2, "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(manifest),
                "size": len(manifest), "annotations": {"io.containerd.image.name": "docker.io/library/evil:latest",
                                                       "org.opencontainers.image.ref.name": "latest"}}]}).encode())
            for data in (blob, config, manifest):
                _add(tar, "blobs/sha256/" + sha256(data)[7:], data)
        if kind in ("docker", "docker25"):
            layer_member = "blobs/sha256/" + sha256(blob)[7:] if kind == "docker25" else "evil/layer.tar"
            config_member = "blobs/sha256/" + sha256(config)[7:] if kind == "docker25" else sha256(config)[7:] + ".json"
            _add(tar, "manifest.json", json.dumps([{"Config": config_member, "RepoTags": ["evil:latest"],
                                                    "Layers": [layer_member]}]).encode())
            if kind == "docker":
                _add(tar, layer_member, plain)
                _add(tar, config_member, config)
    return sha256(blob)


def store_state(store: Store) -> dict:
    """Everything a load or pull may record, read straight from disk."""
    with sqlite3.connect(f"file:{store.db_path}?mode=ro", uri=True) as db:
        tables = {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall())
                  for table in ("images", "tags", "layers")}
    tables["blobs"] = sorted(p.name for p in store.blobs_dir.iterdir())
    tables["tmp"] = sorted(p.name for p in store.tmp_dir.iterdir())
    return tables


def exported_files(store: Store, tmp_path: Path) -> dict[str, bytes]:
    """Build `FROM busybox` (no RUN: nothing needs a sandbox), export it as an OCI archive and
    return the regular files of its layers, read from the exported archive."""
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    out = tmp_path / "out.tar"
    builder.build(context, buildfile_text="FROM busybox\nLABEL probe=1\n", root=store.root,
                  outputs=[f"type=oci,dest={out}"], source_date_epoch=0)
    files: dict[str, bytes] = {}
    with tarfile.open(out) as archive:
        def blob(digest: str) -> bytes:
            return archive.extractfile("blobs/sha256/" + digest.removeprefix("sha256:")).read()

        index = json.loads(archive.extractfile("index.json").read())
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        for layer in manifest["layers"]:
            data = blob(layer["digest"])
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as layer_tar:
                for member in layer_tar.getmembers():
                    if member.isfile():
                        files[member.name.removeprefix("./")] = layer_tar.extractfile(member).read()
    return files


def assert_busybox_files(files: dict[str, bytes], busybox_rootfs: Path) -> None:
    assert "etc/pwned" not in files
    assert files["bin/busybox"] == (busybox_rootfs / "bin/busybox").read_bytes()


@pytest.mark.parametrize("kind", ["oci", "docker25"])
def test_load_refuses_archive_claiming_busybox_diff_id(busybox_store, busybox_rootfs, tmp_path, kind):
    """The OCI path (also taken by `docker save` >= 25 archives) took the config's word for each
    layer's diff_id and recorded it; now each layer is hashed as it is staged."""
    store = busybox_store
    bb_blob, bb_diff_id, bb_config = busybox_facts(store)
    archive = tmp_path / "crafted.tar"
    evil_blob = write_crafted_archive(archive, kind, bb_diff_id, bb_config)
    before = store_state(store)
    with pytest.raises(ArchiveError) as info:
        load_archive(store, archive)
    message = info.value.message
    assert evil_blob in message and bb_diff_id in message
    assert sha256(evil_layer()[0]) in message  # what the layer really hashes to
    # Nothing recorded, and the staged blobs are gone with the failed load.
    assert store_state(store) == before
    assert store.fsck() == []
    assert_busybox_files(exported_files(store, tmp_path), busybox_rootfs)
    assert store.layer_blobs(bb_diff_id) == [(bb_blob, "application/vnd.oci.image.layer.v1.tar+gzip",
                                              store.blob_path(bb_blob).stat().st_size)]


def test_docker_archive_claiming_busybox_diff_id_into_empty_store(busybox_store, tmp_path):
    """A classic docker-archive was already checked layer by layer (before this fix, by reading
    each staged layer a second time); a guard for the one-pass check that replaced that."""
    _, bb_diff_id, bb_config = busybox_facts(busybox_store)
    archive = tmp_path / "crafted.tar"
    write_crafted_archive(archive, "docker", bb_diff_id, bb_config)
    victim = Store.open(tmp_path / "victim")
    before = store_state(victim)
    with pytest.raises(ArchiveError) as info:
        load_archive(victim, archive)
    assert bb_diff_id in info.value.message and sha256(evil_layer()[0]) in info.value.message
    assert store_state(victim) == before


def test_lying_archive_cannot_poison_a_later_busybox_load(busybox_store, busybox_rootfs, tmp_path):
    """The attack end to end: a store without busybox loads the crafted archive; later the user
    loads the real busybox (`docker save` archive), whose layer the loader reused "by diff_id"
    from the attacker's pair; a `FROM busybox` build then exported the attacker's files."""
    from builder.export.docker_archive import export_docker_archive

    _, bb_diff_id, bb_config = busybox_facts(busybox_store)
    genuine = tmp_path / "busybox.tar"
    export_docker_archive(busybox_store, [(busybox_store.resolve("busybox:latest"), ["busybox:latest"])], genuine)
    crafted = tmp_path / "crafted.tar"
    write_crafted_archive(crafted, "oci", bb_diff_id, bb_config)

    victim = Store.open(tmp_path / "victim")
    with pytest.raises(ArchiveError):
        load_archive(victim, crafted)
    load_archive(victim, genuine)
    assert victim.load_image("busybox:latest").config["rootfs"]["diff_ids"] == [bb_diff_id]
    assert_busybox_files(exported_files(victim, tmp_path), busybox_rootfs)
    assert [t for t, _ in victim.tags()] == ["busybox:latest"]
    assert victim.fsck() == []


# -- the same through a registry ------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from registry.registry_helpers import REGISTRY_BIN, RegistryServer

    if not shutil.which(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed")
    server = RegistryServer(tmp_path_factory.mktemp("registry-diff-id")).start()
    yield server
    server.stop()


def test_pull_refuses_config_claiming_busybox_diff_id(registry, busybox_store, busybox_rootfs, tmp_path,
                                                      monkeypatch):
    from builder.registry import RegistryClient, pull

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    store = busybox_store
    bb_blob, bb_diff_id, bb_config = busybox_facts(store)
    blob, config, manifest, plain = lying_image(bb_diff_id, bb_config)
    client = RegistryClient(registry.host)
    for data in (blob, config):
        client.upload_blob("evil/busybox", sha256(data), len(data), lambda data=data: io.BytesIO(data))
    client.put_manifest("evil/busybox", "latest", manifest, "application/vnd.oci.image.manifest.v1+json")

    before = store_state(store)
    with pytest.raises(RegistryError) as info:
        pull(store, f"{registry.host}/evil/busybox:latest")
    message = info.value.message
    assert sha256(blob) in message and bb_diff_id in message and sha256(plain) in message
    after = store_state(store)
    # No image, tag or layer row; the downloaded blobs (digest-checked) stay for gc to sweep.
    assert {k: after[k] for k in ("images", "tags", "layers", "tmp")} == \
        {k: before[k] for k in ("images", "tags", "layers", "tmp")}
    assert set(after["blobs"]) - set(before["blobs"]) == {sha256(blob)[7:], sha256(config)[7:]}
    assert store.fsck() == []
    assert_busybox_files(exported_files(store, tmp_path), busybox_rootfs)
    removed = store.gc(min_age=0).removed_blobs
    assert {sha256(blob), sha256(config)} <= set(removed), "the refused pull's blobs are swept"
    assert bb_blob not in removed and store.fsck() == []


# -- fsck -----------------------------------------------------------------------------------------


def test_fsck_reports_a_tampered_layers_row(busybox_store, tmp_path, capsys):
    store = busybox_store
    bb_blob, bb_diff_id, _ = busybox_facts(store)
    plain, evil_blob = evil_layer()
    store.put_blob(evil_blob)
    with sqlite3.connect(store.db_path) as db:  # as a buggy or hostile writer would have left it
        db.execute("INSERT INTO layers(blob_digest, diff_id, media_type, size) VALUES (?,?,?,?)",
                   (sha256(evil_blob), bb_diff_id, "application/vnd.oci.image.layer.v1.tar+gzip", len(evil_blob)))
        db.execute("UPDATE layers SET diff_id=? WHERE blob_digest=?", (sha256(plain), bb_blob))
    problems = store.fsck()
    assert any(sha256(evil_blob) in p and bb_diff_id in p and sha256(plain) in p for p in problems), problems
    assert any(bb_blob in p and sha256(plain) in p and bb_diff_id in p for p in problems), problems
    assert cli_main(["--root", str(store.root), "fsck"]) == 1
    assert sha256(evil_blob) in capsys.readouterr().out


def test_pairs_recorded_by_an_earlier_version_are_forgotten(busybox_store):
    """Stores of schema 1 hold pairs taken from configs unchecked: opening drops them all, and
    each is learnt again by hashing when needed."""
    store = busybox_store
    bb_blob, bb_diff_id, _ = busybox_facts(store)
    plain, evil_blob = evil_layer()
    store.put_blob(evil_blob)
    with sqlite3.connect(store.db_path) as db:  # what a v1 load of the crafted archive left
        db.execute("INSERT INTO layers(blob_digest, diff_id, media_type, size) VALUES (?,?,?,?)",
                   (sha256(evil_blob), bb_diff_id, "application/vnd.oci.image.layer.v1.tar+gzip", len(evil_blob)))
        db.execute("PRAGMA user_version=1")
    reopened = Store.open(store.root)
    assert reopened.layer_blobs(bb_diff_id) == []
    assert reopened.layer_diff_id(bb_blob) == bb_diff_id
    assert reopened.layer_diff_id(sha256(evil_blob)) == sha256(plain)
    assert reopened.fsck() == []
