"""Issue 10, item 12: an upload Location on another host never gets the registry's credentials.

A registry may hand out upload URLs on another host (blob storage with its own signed URLs); the
builder follows them, as Docker's client does, but sends the registry's Authorization (Basic or
Bearer) only to the registry itself. Here a second loopback server plays that foreign upload
host: it records what it receives and relays the upload to the real registry with credentials of
its own, so the push completes.
"""
from __future__ import annotations

import base64
import http.client
import http.server
import json
import shutil
import threading
import urllib.parse

import pytest
from registry.registry_helpers import (
    PASSWORD,
    REGISTRY_BIN,
    USERNAME,
    RegistryServer,
    TokenServer,
    htpasswd_auth,
)

from builder.image.importer import import_rootfs
from builder.image.store import Store
from builder.registry import RegistryClient, pull, push

if not shutil.which(REGISTRY_BIN):
    pytest.skip("docker-registry is not installed", allow_module_level=True)

BASIC = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class UploadRelay:
    """`front` stands for the registry (forwards everything to it) but answers upload sessions
    with a Location on `foreign`, another origin; `foreign` logs each request's Authorization and
    relays it to the registry, authorised by `credentials_for(repository)`."""

    def __init__(self, registry_port: int, credentials_for) -> None:
        self.registry_port = registry_port
        self.credentials_for = credentials_for
        self.front_log: list[tuple[str, str, str | None]] = []
        self.foreign_log: list[tuple[str, str, str | None]] = []
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                is_foreign = self.server is relay.foreign
                log = relay.foreign_log if is_foreign else relay.front_log
                log.append((self.command, self.path, self.headers.get("Authorization")))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host")}
                headers["Host"] = relay.front_host
                path = self.path
                if is_foreign:
                    # The upload URL the registry gave, plus what the client appended (?digest=).
                    query = urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query)
                    target = urllib.parse.urlsplit(dict(query)["to"])
                    extra = urllib.parse.urlencode([(k, v) for k, v in query if k != "to"])
                    path = target.path + "?" + "&".join(q for q in (target.query, extra) if q)
                    headers.pop("Authorization", None)
                    repository = target.path.removeprefix("/v2/").split("/blobs/uploads/")[0]
                    headers["Authorization"] = relay.credentials_for(repository)
                upstream = http.client.HTTPConnection("127.0.0.1", relay.registry_port, timeout=30)
                upstream.request(self.command, path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() in ("content-length", "connection", "transfer-encoding"):
                        continue
                    if key.lower() == "location" and "/blobs/uploads/" in value:
                        absolute = urllib.parse.urljoin(f"http://{relay.front_host}/", value)
                        value = f"http://{relay.foreign_host}/upload?" + urllib.parse.urlencode({"to": absolute})
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_one

        self.front = _Server(("127.0.0.1", 0), Handler)
        self.foreign = _Server(("127.0.0.1", 0), Handler)
        for server in (self.front, self.foreign):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def front_host(self) -> str:
        return f"127.0.0.1:{self.front.server_address[1]}"

    @property
    def foreign_host(self) -> str:
        return f"127.0.0.1:{self.foreign.server_address[1]}"

    def stop(self) -> None:
        for server in (self.front, self.foreign):
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("registry-basic-relay")
    server = RegistryServer(workdir, htpasswd_auth(workdir)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_setup(tmp_path_factory):
    tokens = TokenServer(tmp_path_factory.mktemp("token-relay")).start()
    server = RegistryServer(tmp_path_factory.mktemp("registry-token-relay"), tokens.auth_yaml()).start()
    yield server, tokens
    server.stop()
    tokens.stop()


def bearer_for(tokens: TokenServer):
    def credentials(repository: str) -> str:
        query = urllib.parse.urlencode({"service": tokens.service, "scope": f"repository:{repository}:pull,push"})
        conn = http.client.HTTPConnection("127.0.0.1", tokens.port, timeout=30)
        conn.request("GET", f"/token?{query}", headers={"Authorization": BASIC})
        token = json.loads(conn.getresponse().read())["token"]
        conn.close()
        return f"Bearer {token}"

    return credentials


@pytest.fixture
def small_image_store(tmp_path) -> Store:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "data").write_bytes(bytes(range(256)) * 40)  # a few KiB: several PATCH chunks
    store = Store.open(tmp_path / "store")
    import_rootfs(store, rootfs, "small:1", source_date_epoch=0)
    return store


@pytest.mark.parametrize("chunk_size", [0, 1024], ids=["monolithic", "chunked"])
@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_upload_location_on_another_host_gets_no_credentials(
    scheme, chunk_size, basic_registry, token_setup, small_image_store, tmp_path, monkeypatch
):
    if scheme == "basic":
        registry, credentials = basic_registry, (lambda _repository: BASIC)
    else:
        registry, tokens = token_setup
        credentials = bearer_for(tokens)
    relay = UploadRelay(registry.port, credentials)
    try:
        config_dir = tmp_path / "docker-config"
        config_dir.mkdir()
        (config_dir / "config.json").write_text(json.dumps(
            {"auths": {relay.front_host: {"username": USERNAME, "password": PASSWORD}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
        target = f"{relay.front_host}/sec/upload-{scheme}-{chunk_size}:v1"
        # Uncompressed, so the layer stays a few KiB (several PATCH chunks) and the pushed manifest
        # is the local one, byte for byte.
        digest = push(small_image_store, "small:1", target, chunk_size=chunk_size, compression="uncompressed")

        uploads = [(method, auth) for method, _path, auth in relay.foreign_log]
        methods = {method for method, _ in uploads}
        assert "PUT" in methods and ("PATCH" in methods) == bool(chunk_size)
        assert [auth for _, auth in uploads] == [None] * len(uploads), "credentials leaked to the upload host"
        # The registry itself got them (so the test's credentials are in play at all).
        expected = "Basic " if scheme == "basic" else "Bearer "
        assert any(method == "POST" and (auth or "").startswith(expected) for method, _, auth in relay.front_log)
        # The push completed: the image pulls back, byte for byte.
        fresh = Store.open(tmp_path / "fresh")
        assert pull(fresh, target).manifest_digest == digest == small_image_store.resolve("small:1")
        assert RegistryClient(relay.front_host).get_manifest(target.split("/", 1)[1].split(":")[0], "v1").digest == digest
    finally:
        relay.stop()


def test_same_origin_rule():
    from builder.registry.transport import same_origin

    assert same_origin("http://127.0.0.1:5000/v2/x/blobs/uploads/u?a=1", "http://127.0.0.1:5000")
    assert same_origin("https://Registry.Example:443/v2/", "https://registry.example")
    assert not same_origin("http://127.0.0.1:5001/v2/", "http://127.0.0.1:5000")
    assert not same_origin("http://registry.example/v2/", "https://registry.example")
    assert not same_origin("https://storage.example/v2/", "https://registry.example")
    assert not same_origin("https://registry.example:notaport/", "https://registry.example")
