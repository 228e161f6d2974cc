"""The protocol client against a real docker-registry: uploads, manifests, auth, mounts, faults."""
from __future__ import annotations

import base64
import io
import json
import os
import stat
import subprocess

import pytest
from registry_helpers import PASSWORD, REFRESH_TOKEN, USERNAME, make_image, push_raw, sha256

from builder.errors import RegistryError
from builder.platforms import Platform
from builder.registry.auth import Credentials, lookup_credentials, parse_challenge
from builder.registry.client import RegistryClient
from builder.registry.platform import select_manifest
from builder.registry.transport import TransientError, uses_plain_http


def test_push_then_read_back_byte_for_byte(registry):
    image = make_image("roundtrip", [({"a": b"1"}, "gzip"), ({"b": b"2" * 5000}, "zstd"), ({"c": b"3"}, "none")])
    client = RegistryClient(registry.host)
    digest = push_raw(client, "test/roundtrip", image, "v1")
    assert digest == image.manifest_digest

    manifest = client.get_manifest("test/roundtrip", "v1")
    assert manifest.data == image.manifest
    assert manifest.digest == image.manifest_digest
    assert manifest.media_type == image.media_type
    by_digest = client.get_manifest("test/roundtrip", image.manifest_digest)
    assert by_digest.data == image.manifest
    for blob_digest, data in image.blobs.items():
        sink = io.BytesIO()
        assert client.fetch_blob("test/roundtrip", blob_digest, sink, len(data)) == len(data)
        assert sink.getvalue() == data
        assert client.blob_exists("test/roundtrip", blob_digest)
    assert not client.blob_exists("test/roundtrip", sha256(b"never pushed"))


def test_chunked_upload_is_reassembled(registry):
    big = os.urandom(300_000)
    image = make_image("chunked", [({"big": big}, "none")])
    client = RegistryClient(registry.host, chunk_size=64 * 1024)
    push_raw(client, "test/chunked", image, "v1")
    for blob_digest, data in image.blobs.items():
        sink = io.BytesIO()
        client.fetch_blob("test/chunked", blob_digest, sink, len(data))
        assert sink.getvalue() == data


def test_skopeo_reads_what_we_pushed(registry):
    image = make_image("skopeo-read", docker=True)
    push_raw(RegistryClient(registry.host), "test/skopeo-read", image, "latest")
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{registry.host}/test/skopeo-read:latest"],
        capture_output=True, check=True,
    ).stdout
    assert out == image.manifest
    info = json.loads(subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/test/skopeo-read:latest"],
        capture_output=True, check=True,
    ).stdout)
    assert info["Digest"] == image.manifest_digest
    assert info["Labels"] == {"test.label": "skopeo-read"}


def test_missing_manifest_is_a_clear_error(registry):
    with pytest.raises(RegistryError, match="not found") as err:
        RegistryClient(registry.host).get_manifest("test/nothing-here", "v1")
    assert "MANIFEST_UNKNOWN" in err.value.message or "NAME_UNKNOWN" in err.value.message


def test_cross_repository_mount(registry):
    image = make_image("mount-src")
    client = RegistryClient(registry.host)
    push_raw(client, "test/mount-src", image, "v1")
    layer = next(d for d in image.blobs if d != image.config_digest)
    assert not client.blob_exists("test/mount-dst", layer)
    assert client.mount_blob("test/mount-dst", layer, "test/mount-src")
    assert client.blob_exists("test/mount-dst", layer)
    assert not client.mount_blob("test/mount-dst2", sha256(b"unknown"), "test/mount-src")


def test_platform_selection_from_an_index(registry):
    amd = make_image("plat-amd64", architecture="amd64")
    arm = make_image("plat-arm64", architecture="arm64")
    client = RegistryClient(registry.host)
    for image in (amd, arm):
        push_raw(client, "test/multi", image, image.manifest_digest)
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": amd.media_type, "digest": amd.manifest_digest, "size": len(amd.manifest),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": arm.media_type, "digest": arm.manifest_digest, "size": len(arm.manifest),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    }).encode()
    client.put_manifest("test/multi", "latest", index, "application/vnd.oci.image.index.v1+json")
    got = client.get_manifest("test/multi", "latest")
    assert got.media_type == "application/vnd.oci.image.index.v1+json"
    assert select_manifest(got.json(), Platform.parse("linux/arm64"), "x")["digest"] == arm.manifest_digest
    assert select_manifest(got.json(), Platform.parse("linux/arm64/v8"), "x")["digest"] == arm.manifest_digest
    assert select_manifest(got.json(), Platform.parse("linux/amd64"), "x")["digest"] == amd.manifest_digest
    with pytest.raises(RegistryError, match="no image for platform linux/s390x") as err:
        select_manifest(got.json(), Platform.parse("linux/s390x"), "x")
    assert "linux/amd64" in err.value.hint and "linux/arm64" in err.value.hint  # arm64/v8, normalised


# -- auth ------------------------------------------------------------------------------------------


def write_docker_config(config_dir, content: dict) -> None:
    (config_dir / "config.json").write_text(json.dumps(content))


def test_basic_auth_from_docker_config(basic_registry, isolated_docker_config):
    image = make_image("basic")
    with pytest.raises(RegistryError, match="requires a login"):
        push_raw(RegistryClient(basic_registry.host), "test/basic", image, "v1")
    token = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    write_docker_config(isolated_docker_config, {"auths": {f"http://{basic_registry.host}": {"auth": token}}})
    client = RegistryClient(basic_registry.host)
    assert push_raw(client, "test/basic", image, "v1") == image.manifest_digest
    assert client.get_manifest("test/basic", "v1").data == image.manifest


def test_basic_auth_wrong_password(basic_registry, isolated_docker_config):
    write_docker_config(isolated_docker_config,
                        {"auths": {basic_registry.host: {"username": USERNAME, "password": "wrong"}}})
    with pytest.raises(RegistryError, match="unauthorized"):
        RegistryClient(basic_registry.host).get_manifest("test/basic", "v1")


def test_token_auth_push_pull_and_token_cache(token_registry, token_server, isolated_docker_config):
    write_docker_config(isolated_docker_config,
                        {"auths": {token_registry.host: {"username": USERNAME, "password": PASSWORD}}})
    image = make_image("token")
    client = RegistryClient(token_registry.host)
    push_raw(client, "test/token", image, "v1")
    push_tokens = client.auth.token_requests
    assert push_tokens == 1, "one token for repository:test/token:pull,push, then reused"
    assert client.get_manifest("test/token", "v1").data == image.manifest
    client.get_manifest("test/token", image.manifest_digest)
    assert client.auth.token_requests == 2, "one more for the pull scope, then cached"
    last = token_server.requests[-1]
    assert last["scopes"] == ["repository:test/token:pull"]
    assert last["authorization"].startswith("Basic ")


def test_token_auth_with_identity_token(token_registry, token_server, isolated_docker_config):
    write_docker_config(isolated_docker_config,
                        {"auths": {token_registry.host: {"identitytoken": REFRESH_TOKEN}}})
    image = make_image("identity-token")
    client = RegistryClient(token_registry.host)
    push_raw(client, "test/identity", image, "v1")
    assert client.get_manifest("test/identity", "v1").data == image.manifest
    post = token_server.requests[-1]
    assert post["method"] == "POST"
    assert post["form"]["grant_type"] == ["refresh_token"]
    assert post["form"]["service"] == [token_server.service]
    write_docker_config(isolated_docker_config, {"auths": {token_registry.host: {"identitytoken": "wrong"}}})
    with pytest.raises(RegistryError, match="refused access"):
        RegistryClient(token_registry.host).get_manifest("test/identity", "v1")


def test_token_auth_without_credentials(token_registry):
    with pytest.raises(RegistryError, match="refused access") as err:
        RegistryClient(token_registry.host).get_manifest("test/token", "v1")
    assert "log in" in err.value.hint


def test_credential_helper(tmp_path, monkeypatch, isolated_docker_config):
    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text(
        "#!/bin/sh\nread server\n"
        'if [ "$1" = get ] && [ "$server" = "reg.example:5000" ]; then\n'
        '  echo \'{"ServerURL":"reg.example:5000","Username":"helper-user","Secret":"helper-pass"}\'\n'
        "else echo 'credentials not found in native keychain'; exit 1; fi\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    write_docker_config(isolated_docker_config, {"credHelpers": {"reg.example:5000": "fake"}})
    assert lookup_credentials("reg.example:5000") == Credentials("helper-user", "helper-pass")
    assert lookup_credentials("other.example") is None
    write_docker_config(isolated_docker_config, {"credsStore": "fake"})
    assert lookup_credentials("reg.example:5000") == Credentials("helper-user", "helper-pass")
    assert lookup_credentials("nowhere.example") is None
    helper.write_text("#!/bin/sh\nread server\necho '{\"Username\":\"<token>\",\"Secret\":\"refresh-xyz\"}'\n")
    assert lookup_credentials("any.example") == Credentials("", "", identity_token="refresh-xyz")
    write_docker_config(isolated_docker_config, {"credsStore": "not-installed"})
    with pytest.raises(RegistryError, match="docker-credential-not-installed is not installed"):
        lookup_credentials("reg.example:5000")


def test_docker_hub_config_key(isolated_docker_config):
    token = base64.b64encode(b"hubuser:hubpass").decode()
    write_docker_config(isolated_docker_config, {"auths": {"https://index.docker.io/v1/": {"auth": token}}})
    assert lookup_credentials("docker.io") == Credentials("hubuser", "hubpass")


def test_challenge_parsing():
    challenge = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push"'
    )
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="basic-realm"').params == {"realm": "basic-realm"}


def test_plain_http_only_for_loopback_or_insecure():
    assert uses_plain_http("127.0.0.1:5000")
    assert uses_plain_http("localhost")
    assert uses_plain_http("[::1]:5000")
    assert not uses_plain_http("registry.example:5000")
    assert uses_plain_http("registry.example:5000", ["registry.example:5000"])
    assert uses_plain_http("registry.example:5000", ["registry.example"])
    assert RegistryClient("registry.example", credentials=None).transport.base_url == "https://registry.example"
    assert RegistryClient("docker.io", credentials=None).transport.base_url == "https://registry-1.docker.io"


# -- faults ----------------------------------------------------------------------------------------


@pytest.fixture
def pushed(registry):
    image = make_image("faults", [({"data": os.urandom(200_000)}, "none")])
    push_raw(RegistryClient(registry.host), "test/faults", image, "v1")
    return image


def layer_of(image) -> str:
    return next(d for d in image.blobs if d != image.config_digest)


def test_500_then_success_is_retried(fault_proxy, pushed):
    fault_proxy.inject("GET", "/blobs/", "status500", times=2)
    fault_proxy.inject("GET", "/manifests/", "status500", times=1)
    client = RegistryClient(fault_proxy.host, backoff=0.01)
    assert client.get_manifest("test/faults", "v1").data == pushed.manifest
    sink = io.BytesIO()
    layer = layer_of(pushed)
    client.fetch_blob("test/faults", layer, sink, len(pushed.blobs[layer]))
    assert sink.getvalue() == pushed.blobs[layer]
    assert [s for (m, p, s) in fault_proxy.log if "/blobs/" in p] == [500, 500, 200]


def test_persistent_500_gives_up(fault_proxy, pushed):
    fault_proxy.inject("GET", "/manifests/", "status500", times=100)
    client = RegistryClient(fault_proxy.host, backoff=0.01, retries=2)
    with pytest.raises(RegistryError, match="HTTP 500"):
        client.get_manifest("test/faults", "v1")
    assert len([1 for (m, p, s) in fault_proxy.log if "/manifests/" in p]) == 3


def test_connection_reset_is_retried(fault_proxy, pushed):
    fault_proxy.inject("GET", "/manifests/", "reset", times=1)
    client = RegistryClient(fault_proxy.host, backoff=0.01)
    assert client.get_manifest("test/faults", "v1").data == pushed.manifest


def test_truncated_body(fault_proxy, pushed):
    layer = layer_of(pushed)
    fault_proxy.inject("GET", layer, "truncate", times=1)
    with pytest.raises(TransientError, match="connection broken|truncated"):
        RegistryClient(fault_proxy.host).fetch_blob("test/faults", layer, io.BytesIO(), len(pushed.blobs[layer]))


def test_corrupt_blob(fault_proxy, pushed):
    layer = layer_of(pushed)
    fault_proxy.inject("GET", layer, "corrupt", times=1)
    with pytest.raises(RegistryError, match="content has digest"):
        RegistryClient(fault_proxy.host).fetch_blob("test/faults", layer, io.BytesIO(), len(pushed.blobs[layer]))


def test_corrupt_manifest(fault_proxy, pushed):
    fault_proxy.inject("GET", "/manifests/", "corrupt", times=2)
    client = RegistryClient(fault_proxy.host)
    with pytest.raises(RegistryError, match="digest"):
        client.get_manifest("test/faults", "v1")
    with pytest.raises(RegistryError, match="digest"):
        client.get_manifest("test/faults", pushed.manifest_digest)


def test_wrong_content_length(fault_proxy, pushed):
    layer = layer_of(pushed)
    fault_proxy.inject("GET", layer, "wrong_length", times=1)
    with pytest.raises(RegistryError, match="announced .* bytes, the manifest says"):
        RegistryClient(fault_proxy.host).fetch_blob("test/faults", layer, io.BytesIO(), len(pushed.blobs[layer]))


def test_huge_manifest(fault_proxy, pushed):
    fault_proxy.inject("GET", "/manifests/", "huge_manifest", times=1)
    with pytest.raises(RegistryError, match="more than the 4194304 byte limit"):
        RegistryClient(fault_proxy.host).get_manifest("test/faults", "v1")


def test_blob_redirect_is_followed(fault_proxy, pushed, registry):
    layer = layer_of(pushed)
    fault_proxy.inject("GET", layer, "redirect", times=1)
    sink = io.BytesIO()
    RegistryClient(fault_proxy.host).fetch_blob("test/faults", layer, sink, len(pushed.blobs[layer]))
    assert sink.getvalue() == pushed.blobs[layer]
    assert [s for (m, p, s) in fault_proxy.log if layer in p] == [307]


def test_unreachable_registry(tmp_path):
    from registry_helpers import free_port

    client = RegistryClient(f"127.0.0.1:{free_port()}", backoff=0.01)
    with pytest.raises(RegistryError, match=r"cannot reach registry 127.0.0.1:[0-9]+: connection refused \(failed after 4 attempt"):
        client.get_manifest("test/x", "v1")


def test_credentials_looked_up_only_when_asked(registry, isolated_docker_config):
    """A broken credsStore does not matter to a registry that wants no login."""
    write_docker_config(isolated_docker_config, {"credsStore": "not-installed"})
    image = make_image("no-login-needed")
    push_raw(RegistryClient(registry.host), "test/no-login", image, "v1")
    assert RegistryClient(registry.host).get_manifest("test/no-login", "v1").data == image.manifest
