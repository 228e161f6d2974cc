"""load_archive on good and hostile archives; import_rootfs (docker import)."""
import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from storehelpers import build_image, make_tree, store_state

from builder.errors import ArchiveError, BuildError
from builder.export import export_docker_archive, export_oci
from builder.image import oci
from builder.image.importer import import_rootfs, load_archive
from builder.image.store import Store
from builder.solve.changes import apply_changes


def rewrite_tar(src: Path, dest: Path, *, drop=(), replace=None, add=()) -> Path:
    """Copy a tar, dropping members, replacing contents (name -> bytes) and adding TarInfos."""
    replace = replace or {}
    with tarfile.open(src) as old, tarfile.open(dest, "w") as new:
        for member in old.getmembers():
            if member.name in drop:
                continue
            if member.name in replace:
                data = replace[member.name]
                member.size = len(data)
                new.addfile(member, io.BytesIO(data))
            elif member.isfile():
                new.addfile(member, old.extractfile(member))
            else:
                new.addfile(member)
        for info, data in add:
            new.addfile(info, io.BytesIO(data) if data is not None else None)
    return dest


@pytest.fixture
def archives(store, three_layer_image, tmp_path):
    docker = tmp_path / "docker.tar"
    export_docker_archive(store, [(three_layer_image.manifest_digest, ["app:1"])], docker)
    oci_tar = tmp_path / "oci.tar"
    export_oci(store, three_layer_image.manifest_digest, oci_tar, tar=True, tags=["app:1"])
    return {"docker": docker, "oci": oci_tar, "record": three_layer_image}


@pytest.fixture
def target(tmp_path):
    """A store that already holds something, to check that failed loads leave it unchanged."""
    other = Store.open(tmp_path / "target")
    build_image(other, [make_tree(tmp_path / "pre", {"pre": "existing\n"})], "pre:1")
    return other


def expect_rejected(target: Store, archive: Path, fragment: str) -> None:
    before = store_state(target)
    with pytest.raises(ArchiveError) as info:
        load_archive(target, archive)
    assert fragment in info.value.message, info.value.message
    assert store_state(target) == before
    assert list(target.tmp_dir.iterdir()) == []
    assert target.fsck() == []


def test_not_a_tar(target, tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive at all" * 100)
    expect_rejected(target, junk, "not a readable tar")
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    expect_rejected(target, empty, "not a readable tar")
    expect_rejected(target, tmp_path / "missing.tar", "no such file")


def test_truncated_archive(target, archives, tmp_path):
    data = archives["oci"].read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError):
        load_archive(target, cut)
    assert target.fsck() == [] and [t for t, _ in target.tags()] == ["pre:1"]


def test_oci_missing_blob(target, archives, tmp_path):
    layer = archives["record"].manifest["layers"][1]["digest"]
    bad = rewrite_tar(archives["oci"], tmp_path / "bad.tar", drop={f"blobs/sha256/{layer[7:]}"})
    expect_rejected(target, bad, "missing")


def test_oci_blob_digest_mismatch(target, archives, tmp_path):
    layer = archives["record"].manifest["layers"][2]["digest"]
    name = f"blobs/sha256/{layer[7:]}"
    with tarfile.open(archives["oci"]) as tar:
        data = bytearray(tar.extractfile(name).read())
    data[-10] ^= 0xFF
    bad = rewrite_tar(archives["oci"], tmp_path / "bad.tar", replace={name: bytes(data)})
    expect_rejected(target, bad, "does not match its digest")


def test_docker_layer_diff_id_mismatch_and_second_image_spoils_all(target, archives, store, tmp_path):
    diff_id = archives["record"].config["rootfs"]["diff_ids"][0]
    name = f"{diff_id[7:]}/layer.tar"
    with tarfile.open(archives["docker"]) as tar:
        data = bytearray(tar.extractfile(name).read())
    data[600] ^= 0x01  # inside the first file's content
    bad = rewrite_tar(archives["docker"], tmp_path / "bad.tar", replace={name: bytes(data)})
    expect_rejected(target, bad, "does not match diff_id")
    # Two images, the second one broken: the first must not appear either.
    good = build_image(store, [make_tree(tmp_path / "g", {"good": "1"})], "good:1")
    both = tmp_path / "both.tar"
    export_docker_archive(store, [(good.manifest_digest, ["good:1"]),
                                  (archives["record"].manifest_digest, ["app:1"])], both)
    with tarfile.open(both) as tar:
        data = bytearray(tar.extractfile(name).read())
    data[600] ^= 0x01
    expect_rejected(target, rewrite_tar(both, tmp_path / "both-bad.tar", replace={name: bytes(data)}),
                    "does not match diff_id")


def test_docker_config_tampered_and_malformed_manifest(target, archives, tmp_path):
    config_name = archives["record"].config_digest[7:] + ".json"
    config = json.loads(archives["record"].config and json.dumps(archives["record"].config))
    config["config"]["Cmd"] = ["/evil"]
    bad = rewrite_tar(archives["docker"], tmp_path / "cfg.tar", replace={config_name: oci.canonical_json(config)})
    expect_rejected(target, bad, "does not match its digest")
    bad = rewrite_tar(archives["docker"], tmp_path / "man.tar", replace={"manifest.json": b"{not json"})
    expect_rejected(target, bad, "not valid JSON")
    bad = rewrite_tar(archives["docker"], tmp_path / "shape.tar", replace={"manifest.json": b'[{"Config": 3}]'})
    expect_rejected(target, bad, "lacks Config or Layers")
    extra = json.loads(json.dumps([{"Config": config_name, "RepoTags": ["app:1"],
                                    "Layers": [archives["record"].config["rootfs"]["diff_ids"][0][7:] + "/layer.tar"]}]))
    bad = rewrite_tar(archives["docker"], tmp_path / "count.tar", replace={"manifest.json": json.dumps(extra).encode()})
    expect_rejected(target, bad, "diff_ids")


def test_symlink_escape_rejected(target, archives, tmp_path):
    diff_id = archives["record"].config["rootfs"]["diff_ids"][0]
    name = f"{diff_id[7:]}/layer.tar"
    link = tarfile.TarInfo(name)
    link.type = tarfile.SYMTYPE
    link.linkname = "../../../../etc/passwd"
    bad = rewrite_tar(archives["docker"], tmp_path / "esc.tar", drop={name}, add=[(link, None)])
    expect_rejected(target, bad, "outside the archive")
    not_archive = tmp_path / "plain.tar"
    with tarfile.open(not_archive, "w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    expect_rejected(target, not_archive, "neither a docker-archive nor an OCI layout")


def test_docker_archive_symlinked_layers_and_gzip(target, archives, tmp_path):
    """docker save links duplicate layers; `docker save | gzip` is accepted too."""
    diff_ids = archives["record"].config["rootfs"]["diff_ids"]
    src = f"{diff_ids[0][7:]}/layer.tar"
    with tarfile.open(archives["docker"]) as tar:
        data = tar.extractfile(src).read()
    moved = tarfile.TarInfo("shared/layer.tar")
    moved.size = len(data)
    link = tarfile.TarInfo(src)
    link.type = tarfile.SYMTYPE
    link.linkname = "../shared/layer.tar"
    linked = rewrite_tar(archives["docker"], tmp_path / "linked.tar", drop={src}, add=[(moved, data), (link, None)])
    compressed = tmp_path / "linked.tar.gz"
    compressed.write_bytes(gzip.compress(linked.read_bytes()))
    assert load_archive(target, compressed)[0][0] == "app:1"
    assert target.load_image("app:1").config_digest == archives["record"].config_digest
    assert target.fsck() == []


def test_docker_archive_with_gzip_layers_kept_compressed(target, store, archives, tmp_path):
    """A docker-archive whose layer.tar files are gzip: blobs kept as-is, media type gzip."""
    record = archives["record"]
    layer_members = {}
    for desc, diff_id in zip(record.manifest["layers"], record.config["rootfs"]["diff_ids"], strict=True):
        layer_members[f"{diff_id[7:]}/layer.tar"] = store.read_blob(desc["digest"])
    gz = rewrite_tar(archives["docker"], tmp_path / "gz.tar", replace=layer_members)
    loaded = load_archive(target, gz)
    image = target.load_image(loaded[0][1])
    assert image.manifest["layers"] == record.manifest["layers"]
    assert image.manifest_digest == record.manifest_digest  # same config, same blobs: same manifest


def test_oci_layout_dir_and_bare_ref_name(target, archives, tmp_path):
    layout = tmp_path / "layout"
    subprocess.run(["skopeo", "copy", f"oci-archive:{archives['oci']}:1", f"oci:{layout}:v7"], check=True,
                   capture_output=True)
    # skopeo writes only ref.name "v7": no full name, so no tag unless a name is given.
    assert load_archive(target, layout) == [(None, archives["record"].manifest_digest)]
    assert load_archive(target, layout, name="imported") == [("imported:v7", archives["record"].manifest_digest)]
    assert target.load_image("imported:v7").config_digest == archives["record"].config_digest


def test_import_rootfs_deterministic(busybox_tar, busybox_rootfs, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a = import_rootfs(Store.open(tmp_path / "a"), busybox_tar, "bb")
    b = import_rootfs(Store.open(tmp_path / "b"), busybox_tar, "bb")
    assert a.manifest_digest == b.manifest_digest
    assert a.config["created"] == "2023-11-14T22:13:20Z"
    assert a.tags == ["bb:latest"]
    gz = tmp_path / "bb.tar.gz"
    gz.write_bytes(gzip.compress(busybox_tar.read_bytes()))
    c = import_rootfs(Store.open(tmp_path / "c"), gz, "bb")
    d = import_rootfs(Store.open(tmp_path / "d"), busybox_rootfs, "bb")
    # Same layer bytes whatever the source's compression (the history comment names the file).
    assert c.manifest["layers"] == a.manifest["layers"]
    assert d.config["rootfs"]["diff_ids"] == a.config["rootfs"]["diff_ids"]
    assert a.config["history"] == [{"created": "2023-11-14T22:13:20Z", "created_by": "",
                                    "comment": "Imported from busybox-rootfs.tar"}]


def test_import_rootfs_adopts_snapshot_and_changes(store, busybox_tar):
    changes = [
        'CMD ["/bin/sh", "-c", "echo hi"]', "ENV A=1 B=two", "ENV C three words", "LABEL org.x=y k=\"v w\"",
        "EXPOSE 80 53/udp", "WORKDIR /srv", "USER app", "ENTRYPOINT /bin/env",
    ]
    record = import_rootfs(store, busybox_tar, "bb:1", edit_config=lambda config: apply_changes(config, changes),
                           message="from test")
    runtime = record.config["config"]
    assert runtime["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert runtime["Entrypoint"] == ["/bin/sh", "-c", "/bin/env"]
    assert runtime["Env"] == ["A=1", "B=two", "C=three words"]
    assert runtime["Labels"] == {"org.x": "y", "k": "v w"}
    assert runtime["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert (runtime["WorkingDir"], runtime["User"]) == ("/srv", "app")
    assert record.config["history"][0]["comment"] == "from test"
    assert store.has_snapshot(record.config["rootfs"]["diff_ids"][0])  # moved in, not unpacked again
    snap = store.snapshot_dirs("bb:1")[0]
    assert os.readlink(snap / "bin/sh") == "busybox"
    assert oct(os.lstat(snap / "tmp").st_mode & 0o7777) == "0o1777"
    with pytest.raises(BuildError) as info:
        import_rootfs(store, busybox_tar, edit_config=lambda config: apply_changes(config, ["RUN rm -rf /"]))
    assert "unsupported change" in info.value.message


def test_import_changes_mean_what_they_mean_in_a_build(store, busybox_tar, tmp_path):
    """EXPOSE ranges, variables and ENTRYPOINT after CMD, as the same lines give in a Buildfile."""
    import builder

    changes = ["ENV PORT=8080 APP=/srv", "EXPOSE 9000-9002/udp $PORT", "WORKDIR $APP", "CMD [\"serve\"]",
               "ENTRYPOINT [\"/bin/app\"]", "HEALTHCHECK --interval=.5s CMD true"]
    imported = import_rootfs(store, busybox_tar, "bb:changed", edit_config=lambda config: apply_changes(config, changes))
    (tmp_path / "ctx").mkdir()
    built = builder.build(tmp_path / "ctx", buildfile_text="FROM scratch\n" + "\n".join(changes) + "\n", root=store.root)
    # The same, but for the default PATH BuildKit gives a scratch image and the ArgsEscaped its CMD
    # sets; `docker import --change` adds neither (checked with dockerd 20.10: Env ["A=1"] after
    # --change "ENV A=1"; its classic dispatcher sets ArgsEscaped on Windows only).
    expected = {**imported.config["config"], "ArgsEscaped": True}
    expected["Env"] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *expected["Env"]]
    assert "ArgsEscaped" not in imported.config["config"]
    assert built.config["config"] == expected
    assert imported.config["config"]["ExposedPorts"] == {"9000/udp": {}, "9001/udp": {}, "9002/udp": {}, "8080/tcp": {}}
    assert imported.config["config"]["Cmd"] == ["serve"]
    assert imported.config["config"]["Healthcheck"]["Interval"] == 500_000_000


def test_oci_layout_holding_docker_manifest_is_rebuilt_as_oci(target, store, archives, tmp_path):
    """A layout whose manifest is Docker schema2: config bytes and layer blobs kept, manifest made OCI."""
    record = archives["record"]
    layout = tmp_path / "layout"
    export_oci(store, record.manifest_digest, layout, tar=False)
    docker_manifest = {
        "schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST,
        "config": {"mediaType": oci.DOCKER_CONFIG, "digest": record.config_digest,
                   "size": len(store.read_blob(record.config_digest))},
        "layers": [dict(layer, mediaType=oci.DOCKER_LAYER_GZIP) for layer in record.manifest["layers"]],
    }
    data = json.dumps(docker_manifest, indent=2).encode()
    digest = oci.sha256_digest(data)
    (layout / "blobs/sha256" / digest[7:]).write_bytes(data)
    index = {"schemaVersion": 2, "manifests": [{"mediaType": oci.DOCKER_MANIFEST, "digest": digest, "size": len(data),
                                                "annotations": {"org.opencontainers.image.ref.name": "reg.io/x/y:z"}}]}
    (layout / "index.json").write_text(json.dumps(index))
    [(tag, manifest_digest)] = load_archive(target, layout)
    assert tag == "reg.io/x/y:z"
    image = target.load_image(tag)
    assert manifest_digest == record.manifest_digest  # rebuilt canonically, it is the manifest we exported
    assert image.manifest["mediaType"] == oci.OCI_MANIFEST
    assert image.config_digest == record.config_digest
    assert [layer["mediaType"] for layer in image.manifest["layers"]] == [oci.OCI_LAYER_GZIP] * 3


def test_import_without_epoch_is_still_deterministic(busybox_tar, tmp_path):
    """created comes from the rootfs (newest mtime), not from the clock."""
    from fixtures.busybox import FIXED_MTIME

    a = import_rootfs(Store.open(tmp_path / "a"), busybox_tar, "bb")
    b = import_rootfs(Store.open(tmp_path / "b"), busybox_tar, "bb")
    assert a.manifest_digest == b.manifest_digest
    assert a.config["created"] == oci.format_time(FIXED_MTIME)


def test_a_malformed_source_date_epoch_is_an_error_for_import_as_for_build(tmp_path, monkeypatch, busybox_tar) -> None:
    """One reader of $SOURCE_DATE_EPOCH: a value that is not seconds is refused, never ignored."""
    import builder
    from builder.errors import BuildError
    from builder.image.importer import import_rootfs
    from builder.image.store import Store

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    store = Store.open(tmp_path / "store")
    with pytest.raises(BuildError, match="SOURCE_DATE_EPOCH"):
        import_rootfs(store, busybox_tar, "bb:1")
    (tmp_path / "ctx").mkdir()
    with pytest.raises(BuildError, match="SOURCE_DATE_EPOCH"):
        builder.build(tmp_path / "ctx", buildfile_text="FROM scratch\nENV A=1\n", root=store.root)
    assert store.images() == []
