"""Pulls and pushes go through HTTP_PROXY/HTTPS_PROXY like Docker's, honour NO_PROXY, and never
proxy a loopback registry. The proxy here listens on 127.0.0.1 and sends everything, whatever
host was asked for, to the local docker-registry: no name is ever resolved, nothing leaves."""
from __future__ import annotations

import base64
import io
import socket
import threading

import pytest
from registry_helpers import make_image, push_raw

from builder.registry.client import RegistryClient
from builder.registry.transport import proxy_for

REGISTRY_NAME = "registry.test"  # reached only through the proxy


class RecordingProxy:
    """A forward proxy: CONNECT tunnels and absolute-form requests, all sent to `upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests: list[str] = []  # request lines as received
        self.auth: list[str | None] = []  # the Proxy-Authorization of each
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            head, rest = head.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            self.requests.append(lines[0])
            headers = dict(line.split(": ", 1) for line in lines[1:])
            self.auth.append(headers.pop("Proxy-Authorization", None))
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with upstream:
                method, target, version = lines[0].split(" ")
                if method == "CONNECT":
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:
                    path = "/" + target.split("://", 1)[1].split("/", 1)[1]
                    request = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in headers.items()]
                    upstream.sendall(("\r\n".join(request) + "\r\n\r\n").encode("latin-1") + rest)
                self._pipe(client, upstream)

    @staticmethod
    def _pipe(one: socket.socket, other: socket.socket) -> None:
        def copy(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        backwards = threading.Thread(target=copy, args=(other, one), daemon=True)
        backwards.start()
        copy(one, other)
        backwards.join(30)

    def stop(self) -> None:
        self.server.close()


@pytest.fixture
def proxy(registry):
    server = RecordingProxy(registry.port)
    yield server
    server.stop()


def _clear_proxy_env(monkeypatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_push_and_pull_go_through_the_proxy_with_its_credentials(registry, proxy, monkeypatch):
    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", f"http://user:p%40ss@127.0.0.1:{proxy.port}")
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:p%40ss@127.0.0.1:{proxy.port}")
    host = f"{REGISTRY_NAME}:{registry.port}"
    client = RegistryClient(host, insecure=[host], credentials=None)
    image = make_image("proxied", [({"a": b"through the proxy"}, "gzip")])
    assert push_raw(client, "test/proxied", image, "v1") == image.manifest_digest
    assert client.get_manifest("test/proxied", "v1").digest == image.manifest_digest
    blob, data = next(iter(image.blobs.items()))
    sink = io.BytesIO()
    client.fetch_blob("test/proxied", blob, sink, len(data))
    assert sink.getvalue() == data
    # Every request reached the registry through the proxy, named by the registry's own name.
    assert proxy.requests and all(REGISTRY_NAME in line for line in proxy.requests)
    assert any(line.startswith("GET http://") for line in proxy.requests)
    assert set(proxy.auth) == {"Basic " + base64.b64encode(b"user:p@ss").decode()}


def test_no_proxy_and_loopback_registries_go_direct(registry, proxy, monkeypatch):
    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    client = RegistryClient(registry.host, credentials=None)  # 127.0.0.1: never proxied
    image = make_image("direct", [({"a": b"direct"}, "gzip")])
    assert push_raw(client, "test/direct", image, "v1") == image.manifest_digest
    assert proxy.requests == []

    # NO_PROXY, checked without connecting: going direct would resolve registry.test.
    host = f"{REGISTRY_NAME}:{registry.port}"
    assert proxy_for("https", host) is not None
    monkeypatch.setenv("NO_PROXY", f"other.example,.{REGISTRY_NAME.split('.')[1]}")
    assert proxy_for("https", host) is None and proxy_for("http", host) is None
    assert proxy_for("https", "elsewhere.example:5000") is not None
