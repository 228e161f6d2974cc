"""pull/push between the local store and a real docker-registry, skopeo interop, faults."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from registry_helpers import PASSWORD, USERNAME, make_image, push_raw, write_oci_layout

from builder.errors import ImageNotFound, RegistryError
from builder.image.store import Store
from builder.registry import RegistryClient, pull, push


@pytest.fixture
def store(tmp_path):
    return Store.open(tmp_path / "store")


def fresh_store(tmp_path, name: str) -> Store:
    return Store.open(tmp_path / name)


def blob_files(store: Store) -> set[str]:
    return {p.name for p in store.blobs_dir.iterdir()}


def assert_nothing_visible(store: Store, blobs_before: set[str]) -> None:
    assert store.images() == []
    assert store.tags() == []
    assert [p.name for p in store.tmp_dir.iterdir()] == [], "no temp file left behind"
    # Only verified, complete blobs may have been published; nothing partial.
    for name in blob_files(store) - blobs_before:
        import hashlib

        assert hashlib.sha256((store.blobs_dir / name).read_bytes()).hexdigest() == name


def test_pull_by_tag_and_digest(registry, store, tmp_path):
    image = make_image("pull-me", [({"a": b"A"}, "gzip"), ({"b": b"B"}, "zstd"), ({"c": b"C"}, "none")])
    push_raw(RegistryClient(registry.host), "test/pull-me", image, "v1")
    record = pull(store, f"{registry.host}/test/pull-me:v1")
    assert record.manifest_digest == image.manifest_digest
    assert record.config_digest == image.config_digest
    assert record.tags == [f"{registry.host}/test/pull-me:v1"]
    assert store.read_blob(record.manifest_digest) == image.manifest
    for digest, data in image.blobs.items():
        assert store.read_blob(digest) == data
    other = fresh_store(tmp_path, "other")
    by_digest = pull(other, f"{registry.host}/test/pull-me@{image.manifest_digest}")
    assert by_digest.manifest_digest == image.manifest_digest
    assert by_digest.tags == [], "a pull by digest tags nothing, as docker does"


def test_push_then_pull_into_fresh_store(registry, store, tmp_path):
    image = make_image("push-me", docker=True)
    push_raw(RegistryClient(registry.host), "test/seed", image, "v1")
    pulled = pull(store, f"{registry.host}/test/seed:v1")
    store.tag(f"{registry.host}/test/pushed:v2", pulled.manifest_digest)
    digest = push(store, f"{registry.host}/test/pushed:v2")
    assert digest == image.manifest_digest
    again = pull(fresh_store(tmp_path, "again"), f"{registry.host}/test/pushed:v2")
    assert (again.manifest_digest, again.config_digest) == (pulled.manifest_digest, pulled.config_digest)


def test_push_to_other_repo_mounts_blobs(fault_proxy, store):
    image = make_image("mount-me")
    push_raw(RegistryClient(fault_proxy.host), "test/mount-origin", image, "v1")
    pulled = pull(store, f"{fault_proxy.host}/test/mount-origin:v1")
    fault_proxy.clear()
    digest = push(store, f"{fault_proxy.host}/test/mount-origin:v1", f"{fault_proxy.host}/test/mount-target:v1")
    assert digest == pulled.manifest_digest
    posts = [p for (m, p, s) in fault_proxy.log if m == "POST"]
    assert posts and all("mount=" in p and "from=test%2Fmount-origin" in p for p in posts)
    assert [s for (m, p, s) in fault_proxy.log if m == "POST"] == [201] * len(image.blobs)
    assert not [p for (m, p, s) in fault_proxy.log if m in ("PUT", "PATCH") and "/blobs/" in p]
    # A second push finds everything there: HEADs only, then the manifest.
    fault_proxy.clear()
    push(store, f"{fault_proxy.host}/test/mount-origin:v1", f"{fault_proxy.host}/test/mount-target:v1")
    assert {m for (m, p, s) in fault_proxy.log if "/blobs/" in p} == {"HEAD"}


def test_push_chunked(registry, store, tmp_path):
    image = make_image("chunky", [({"big": os.urandom(150_000)}, "none")])
    push_raw(RegistryClient(registry.host), "test/chunky-src", image, "v1")
    pulled = pull(store, f"{registry.host}/test/chunky-src:v1")
    store.tag(f"{registry.host}/elsewhere/chunky:v1", pulled.manifest_digest)
    assert push(store, f"{registry.host}/elsewhere/chunky:v1", chunk_size=32 * 1024) == image.manifest_digest
    again = pull(fresh_store(tmp_path, "again"), f"{registry.host}/elsewhere/chunky:v1")
    assert again.manifest_digest == image.manifest_digest


def test_push_unknown_local_image(registry, store):
    with pytest.raises(ImageNotFound):
        push(store, f"{registry.host}/test/absent:v1")


def test_pull_missing_tag(registry, store):
    with pytest.raises(RegistryError, match="not found"):
        pull(store, f"{registry.host}/test/never-pushed:v1")
    assert store.images() == []


def test_pull_platform_from_index(registry, store):
    amd = make_image("idx-amd64", architecture="amd64")
    arm = make_image("idx-arm64", architecture="arm64")
    client = RegistryClient(registry.host)
    for image in (amd, arm):
        push_raw(client, "test/idx", image, image.manifest_digest)
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"mediaType": i.media_type, "digest": i.manifest_digest, "size": len(i.manifest),
             "platform": {"os": "linux", "architecture": a}}
            for i, a in ((amd, "amd64"), (arm, "arm64"))
        ],
    }).encode()
    client.put_manifest("test/idx", "latest", index, "application/vnd.docker.distribution.manifest.list.v2+json")
    record = pull(store, f"{registry.host}/test/idx", platform="linux/arm64")
    assert record.manifest_digest == arm.manifest_digest
    assert record.config["architecture"] == "arm64"
    assert record.tags == [f"{registry.host}/test/idx:latest"]
    record = pull(store, f"{registry.host}/test/idx:latest", platform="linux/amd64")
    assert record.manifest_digest == amd.manifest_digest
    with pytest.raises(RegistryError, match="no image for platform linux/riscv64"):
        pull(store, f"{registry.host}/test/idx", platform="linux/riscv64")


def test_token_auth_pull_push(token_registry, isolated_docker_config, store, tmp_path):
    (isolated_docker_config / "config.json").write_text(json.dumps(
        {"auths": {token_registry.host: {"username": USERNAME, "password": PASSWORD}}}))
    image = make_image("token-store")
    push_raw(RegistryClient(token_registry.host), "test/tok", image, "v1")
    record = pull(store, f"{token_registry.host}/test/tok:v1")
    assert record.manifest_digest == image.manifest_digest
    assert push(store, f"{token_registry.host}/test/tok:v1", f"{token_registry.host}/test/tok2:v1") == \
        image.manifest_digest
    assert pull(fresh_store(tmp_path, "s2"), f"{token_registry.host}/test/tok2:v1").manifest_digest == \
        image.manifest_digest


def test_basic_auth_pull(basic_registry, isolated_docker_config, store):
    (isolated_docker_config / "config.json").write_text(json.dumps(
        {"auths": {basic_registry.host: {"username": USERNAME, "password": PASSWORD}}}))
    image = make_image("basic-store")
    push_raw(RegistryClient(basic_registry.host), "test/basic-store", image, "v1")
    assert pull(store, f"{basic_registry.host}/test/basic-store:v1").manifest_digest == image.manifest_digest


# -- skopeo interop -----------------------------------------------------------------------------------


def test_skopeo_reads_our_push(registry, store, tmp_path):
    image = make_image("for-skopeo", [({"x": b"x" * 100}, "gzip"), ({"y": b"y"}, "zstd")])
    push_raw(RegistryClient(registry.host), "test/for-skopeo-src", image, "v1")
    pulled = pull(store, f"{registry.host}/test/for-skopeo-src:v1")
    store.tag(f"{registry.host}/test/for-skopeo:v1", pulled.manifest_digest)
    push(store, f"{registry.host}/test/for-skopeo:v1")
    info = json.loads(subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/test/for-skopeo:v1"],
        capture_output=True, check=True).stdout)
    assert info["Digest"] == image.manifest_digest
    assert info["Layers"] == [d["digest"] for d in json.loads(image.manifest)["layers"]]
    layout = tmp_path / "layout"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", "--preserve-digests",
         f"docker://{registry.host}/test/for-skopeo:v1", f"oci:{layout}:copied"],
        capture_output=True, check=True)
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.manifest_digest


def test_we_pull_what_skopeo_pushed(registry, store, tmp_path):
    image = make_image("from-skopeo", [({"s": b"skopeo"}, "gzip")])
    layout = tmp_path / "oci"
    write_oci_layout(layout, image, "v1")
    subprocess.run(
        ["skopeo", "copy", "--dest-tls-verify=false", "--preserve-digests", f"oci:{layout}:v1",
         f"docker://{registry.host}/test/from-skopeo:v1"],
        capture_output=True, check=True)
    record = pull(store, f"{registry.host}/test/from-skopeo:v1")
    assert record.manifest_digest == image.manifest_digest
    assert record.config["config"]["Labels"] == {"test.label": "from-skopeo"}


# -- faults through the proxy -------------------------------------------------------------------------


@pytest.fixture
def faulty(registry, fault_proxy):
    image = make_image("faulty", [({"one": os.urandom(100_000)}, "none"), ({"two": b"2"}, "gzip")])
    push_raw(RegistryClient(registry.host), "test/faulty", image, "v1")
    fault_proxy.clear()
    return image


def layers_of(image) -> list[str]:
    return [d["digest"] for d in json.loads(image.manifest)["layers"]]


def test_pull_retries_500_and_resets(fault_proxy, faulty, store):
    fault_proxy.inject("GET", "/manifests/", "status500", times=1)
    fault_proxy.inject("GET", layers_of(faulty)[0], "status500", times=2)
    fault_proxy.inject("GET", layers_of(faulty)[1], "reset", times=1)
    record = pull(store, f"{fault_proxy.host}/test/faulty:v1")
    assert record.manifest_digest == faulty.manifest_digest


def test_pull_survives_one_truncated_body(fault_proxy, faulty, store):
    fault_proxy.inject("GET", layers_of(faulty)[0], "truncate", times=1)
    record = pull(store, f"{fault_proxy.host}/test/faulty:v1")
    assert store.read_blob(layers_of(faulty)[0]) == faulty.blobs[layers_of(faulty)[0]]
    assert record.manifest_digest == faulty.manifest_digest


@pytest.mark.parametrize(
    ("kind", "path_part", "message"),
    [
        ("truncate", "LAYER", "cannot download blob"),
        ("corrupt", "LAYER", "content has digest"),
        ("wrong_length", "LAYER", "announced .* bytes, the manifest says"),
        ("corrupt", "/manifests/", "digest"),
        ("huge_manifest", "/manifests/", "byte limit"),
    ],
)
def test_pull_faults_leave_nothing_visible(fault_proxy, faulty, store, kind, path_part, message):
    target = layers_of(faulty)[0] if path_part == "LAYER" else path_part
    fault_proxy.inject("GET", target, kind, times=100)
    before = blob_files(store)
    with pytest.raises(RegistryError, match=message):
        pull(store, f"{fault_proxy.host}/test/faulty:v1")
    assert_nothing_visible(store, before)
    if path_part == "LAYER":
        assert not store.has_blob(target)
    # Once the registry behaves again the same store completes the pull.
    fault_proxy.clear()
    assert pull(store, f"{fault_proxy.host}/test/faulty:v1").manifest_digest == faulty.manifest_digest


def test_persistent_blob_500_is_not_retried_forever(fault_proxy, faulty, store):
    fault_proxy.inject("GET", layers_of(faulty)[0], "status500", times=100)
    with pytest.raises(RegistryError, match="cannot get blob .*: HTTP 500"):
        pull(store, f"{fault_proxy.host}/test/faulty:v1")
    assert len([1 for (m, p, s) in fault_proxy.log if layers_of(faulty)[0] in p]) == 4
    assert store.images() == [] and not store.has_blob(layers_of(faulty)[0])
