"""Exports: OCI layout (dir/tar), docker-archive, flattened tar and dir; checked with skopeo/umoci."""
import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from storehelpers import store_state

from builder.errors import OutputError
from builder.export import (
    OutputSpec,
    export_docker_archive,
    export_local,
    export_oci,
    export_rootfs_tar,
    parse_output_spec,
    write_output,
)
from builder.image import oci
from builder.image.importer import load_archive
from builder.image.store import Store


def run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def layer_digests(record) -> list[str]:
    return [layer["digest"] for layer in record.manifest["layers"]]


def check_flattened(root: Path) -> None:
    """The final file system of three_layer_image."""
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert files == ["a", "b", "dir", "dir/z"]
    assert (root / "a").read_text() == "three\n" and (root / "dir/z").read_text() == "z\n"


def test_oci_tar_is_deterministic_and_valid(store, three_layer_image, tmp_path):
    record = three_layer_image
    out1, out2 = tmp_path / "one.tar", tmp_path / "two.tar"
    export_oci(store, record.manifest_digest, out1, tar=True, tags=["app:1"])
    export_oci(store, record.manifest_digest, out2, tar=True, tags=["app:1"])
    assert out1.read_bytes() == out2.read_bytes()
    infos = members(out1)
    names = [m.name for m in infos]
    # An order set by the image alone: layers as the manifest lists them, config, manifest, index.
    blob_names = [f"blobs/sha256/{d[7:]}" for d in
                  [*layer_digests(record), record.config_digest, record.manifest_digest]]
    assert names == ["blobs", "blobs/sha256", *blob_names, "index.json", "oci-layout"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in infos} == {(0, 0, 0, "", "")}
    with tarfile.open(out1) as tar:
        index = json.load(tar.extractfile("index.json"))
        for name in blob_names:
            assert hashlib.sha256(tar.extractfile(name).read()).hexdigest() == name.rsplit("/", 1)[1]
        assert json.load(tar.extractfile("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    assert index["manifests"] == [{
        "mediaType": oci.OCI_MANIFEST, "digest": record.manifest_digest,
        "size": store.blob_path(record.manifest_digest).stat().st_size,
        "annotations": {"org.opencontainers.image.ref.name": "1", "io.containerd.image.name": "docker.io/library/app:1"},
        "platform": {"architecture": "amd64", "os": "linux"},
    }]
    inspected = json.loads(run("skopeo", "inspect", f"oci-archive:{out1}:1"))
    assert inspected["Digest"] == record.manifest_digest
    assert inspected["Layers"] == layer_digests(record)
    assert inspected["Labels"] is None and inspected["Os"] == "linux"


def test_oci_dir_with_skopeo_and_umoci(store, three_layer_image, tmp_path):
    record = three_layer_image
    layout = tmp_path / "layout"
    export_oci(store, record.manifest_digest, layout, tar=False, tags=["app:1"])
    export_oci(store, record.manifest_digest, layout, tar=False, tags=["app:stable"])  # adds a second ref
    refs = [m["annotations"]["org.opencontainers.image.ref.name"]
            for m in json.loads((layout / "index.json").read_text())["manifests"]]
    assert refs == ["1", "stable"]
    for ref in ("1", "stable"):
        assert json.loads(run("skopeo", "inspect", f"oci:{layout}:{ref}"))["Digest"] == record.manifest_digest
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--image", f"{layout}:1", str(bundle))
    check_flattened(bundle / "rootfs")
    assert not [p for p in layout.rglob("*.tmp")]
    with pytest.raises(OutputError):
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "file").write_text("x")
        export_oci(store, record.manifest_digest, tmp_path / "junk", tar=False)


def test_docker_archive_with_skopeo_and_round_trip(store, three_layer_image, tmp_path):
    record = three_layer_image
    archive = tmp_path / "docker.tar"
    export_docker_archive(store, [(record.manifest_digest, ["app:1", "localhost:5000/app:v2"])], archive)
    again = tmp_path / "again.tar"
    export_docker_archive(store, [(record.manifest_digest, ["app:1", "localhost:5000/app:v2"])], again)
    assert archive.read_bytes() == again.read_bytes()
    diff_ids = record.config["rootfs"]["diff_ids"]
    config_name = record.config_digest[7:] + ".json"
    layer_names = [d[7:] + "/layer.tar" for d in diff_ids]
    names = [m.name for m in members(archive)]
    assert names == sorted([config_name, *layer_names, *(d[7:] for d in diff_ids), "manifest.json", "repositories"])
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        assert tar.extractfile(config_name).read() == store.read_blob(record.config_digest)
        for name, diff_id in zip(layer_names, diff_ids, strict=True):
            assert "sha256:" + hashlib.sha256(tar.extractfile(name).read()).hexdigest() == diff_id
        repositories = json.load(tar.extractfile("repositories"))
    assert manifest == [{"Config": config_name, "Layers": layer_names,
                         "RepoTags": ["app:1", "localhost:5000/app:v2"]}]
    assert repositories == {"app": {"1": diff_ids[-1][7:]}, "localhost:5000/app": {"v2": diff_ids[-1][7:]}}

    inspected = json.loads(run("skopeo", "inspect", f"docker-archive:{archive}"))
    assert inspected["Layers"] == diff_ids
    copied = tmp_path / "copied"
    run("skopeo", "copy", f"docker-archive:{archive}", f"oci:{copied}:x")
    # skopeo re-serialises the config when it converts to OCI: same content, its own bytes.
    assert json.loads(run("skopeo", "inspect", "--config", f"oci:{copied}:x")) == record.config

    other = Store.open(tmp_path / "other")
    loaded = load_archive(other, archive)
    assert [t for t, _ in loaded] == ["app:1", "localhost:5000/app:v2"]
    image = other.load_image("app:1")
    assert image.config_digest == record.config_digest
    assert image.tags == ["app:1", "localhost:5000/app:v2"]
    assert [layer["mediaType"] for layer in image.manifest["layers"]] == [oci.OCI_LAYER_TAR] * 3
    assert layer_digests(image) == diff_ids
    assert other.fsck() == []
    flat = tmp_path / "flat"
    export_local(other, image.manifest_digest, flat)
    check_flattened(flat)


def test_oci_archive_round_trip_keeps_manifest_digest(store, three_layer_image, tmp_path):
    archive = tmp_path / "oci.tar"
    export_oci(store, three_layer_image.manifest_digest, archive, tar=True, tags=["ghcr.io/org/app:1"])
    other = Store.open(tmp_path / "other")
    assert load_archive(other, archive) == [("ghcr.io/org/app:1", three_layer_image.manifest_digest)]
    assert other.load_image("ghcr.io/org/app:1").manifest == three_layer_image.manifest
    # Loading again changes nothing.
    before = store_state(other)
    load_archive(other, archive)
    assert store_state(other) == before


def test_rootfs_tar_and_local_contents_exact(store, three_layer_image, tmp_path):
    out = tmp_path / "rootfs.tar"
    export_rootfs_tar(store, three_layer_image.manifest_digest, out)
    infos = members(out)
    assert [(m.name, m.type, m.mode, m.uid, m.gid) for m in infos] == [
        ("a", tarfile.REGTYPE, 0o644, 0, 0), ("b", tarfile.REGTYPE, 0o644, 0, 0),
        ("dir", tarfile.DIRTYPE, 0o755, 0, 0), ("dir/z", tarfile.REGTYPE, 0o644, 0, 0)]
    with tarfile.open(out) as tar:
        assert tar.extractfile("a").read() == b"three\n"
    second = tmp_path / "rootfs2.tar"
    export_rootfs_tar(store, three_layer_image.manifest_digest, second)
    assert out.read_bytes() == second.read_bytes()
    local = tmp_path / "local"
    export_local(store, three_layer_image.manifest_digest, local)
    check_flattened(local)
    assert list(store.tmp_dir.iterdir()) == []


def test_export_to_stdout(store, three_layer_image, tmp_path, capfdbinary):
    export_oci(store, three_layer_image.manifest_digest, "-", tar=True)
    data = capfdbinary.readouterr().out
    path = tmp_path / "captured.tar"
    path.write_bytes(data)
    assert "index.json" in [m.name for m in members(path)]


@pytest.mark.parametrize("text, expected", [
    ("type=oci,dest=out.tar", OutputSpec("oci", "out.tar", True)),
    ("type=oci,dest=layout,tar=false", OutputSpec("oci", "layout", False)),
    ("type=docker,dest=img.tar,name=app:1", OutputSpec("docker", "img.tar", True, ("app:1",))),
    ('type=docker,dest=i.tar,"name=a:1,b:2"', OutputSpec("docker", "i.tar", True, ("a:1", "b:2"))),
    ("type=tar,dest=rootfs.tar", OutputSpec("tar", "rootfs.tar")),
    ("type=local,dest=out", OutputSpec("local", "out")),
    ("out/dir", OutputSpec("local", "out/dir")),
    ("-", OutputSpec("tar", "-")),
    ("type=registry,name=localhost:5000/app:1", OutputSpec("registry", None, True, ("localhost:5000/app:1",), True)),
    ("type=registry,name=localhost:5000/app,push=true", OutputSpec("registry", None, True, ("localhost:5000/app",), True)),
])
def test_parse_output_spec(text, expected):
    spec = parse_output_spec(text)
    assert (spec.type, spec.dest, spec.tar, spec.names, spec.push) == \
        (expected.type, expected.dest, expected.tar, expected.names, expected.push)


@pytest.mark.parametrize("text, message, hint", [
    ("type=zip,dest=x", "unknown output type 'zip'", "oci, docker, tar, local, registry"),
    ("dest=x", "has no type", "type=oci"),
    ("type=local", "needs dest", "type=local,dest=out"),
    ("type=oci,dest=x,tar=maybe", "invalid value 'maybe' for tar", "tar=true"),
    ("type=oci,dest=x,colour=red", "unknown option 'colour'", "dest"),
    ("type=registry", "needs name", "type=registry,name="),
    ("type=docker,dest=x,name=Bad", "invalid image name 'Bad'", "lowercase"),
    ("type=oci,dest", "invalid field 'dest'", "key=value"),
    ("", "empty --output", "type=oci"),
    ("type=local,dest=-", "stdout", "type=tar,dest=-"),
])
def test_bad_output_specs(text, message, hint):
    with pytest.raises(OutputError) as info:
        parse_output_spec(text)
    assert message in info.value.message
    assert hint in (info.value.hint or "")


def test_write_output_each_type(store, three_layer_image, tmp_path):
    digest = three_layer_image.manifest_digest
    write_output(store, digest, parse_output_spec(f"type=oci,dest={tmp_path / 'o.tar'}"), ["app:1"])
    assert json.loads(run("skopeo", "inspect", f"oci-archive:{tmp_path / 'o.tar'}:1"))["Digest"] == digest
    write_output(store, digest, parse_output_spec(f"type=docker,dest={tmp_path / 'd.tar'},name=x:2"), ["app:1"])
    with tarfile.open(tmp_path / "d.tar") as tar:
        assert json.load(tar.extractfile("manifest.json"))[0]["RepoTags"] == ["x:2", "app:1"]
    write_output(store, digest, parse_output_spec(f"type=tar,dest={tmp_path / 'r.tar'}"))
    assert [m.name for m in members(tmp_path / "r.tar")] == ["a", "b", "dir", "dir/z"]
    write_output(store, digest, parse_output_spec(str(tmp_path / "loc")))
    check_flattened(tmp_path / "loc")


def test_oci_ref_names_stay_unique(store, three_layer_image, tmp_path):
    layout = tmp_path / "layout"
    export_oci(store, three_layer_image.manifest_digest, layout, tar=False, tags=["a:1", "b:1", "a:1"])
    refs = [m["annotations"]["org.opencontainers.image.ref.name"]
            for m in json.loads((layout / "index.json").read_text())["manifests"]]
    assert refs == ["a:1", "b:1"]
    assert json.loads(run("skopeo", "inspect", f"oci:{layout}:b:1"))["Digest"] == three_layer_image.manifest_digest
    other = Store.open(tmp_path / "other")
    assert [t for t, _ in load_archive(other, layout)] == ["a:1", "b:1"]


def test_write_output_registry_pushes(store, three_layer_image, local_registry):
    spec = parse_output_spec(f"type=registry,name={local_registry}/team/app:1,insecure=true")
    write_output(store, three_layer_image.manifest_digest, spec, ["app:1"])
    pushed = json.loads(run("skopeo", "inspect", "--tls-verify=false", f"docker://{local_registry}/team/app:1"))
    assert pushed["Digest"] == three_layer_image.manifest_digest
    assert pushed["Layers"] == layer_digests(three_layer_image)
