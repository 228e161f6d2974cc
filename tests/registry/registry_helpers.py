"""Real registries for the tests: Debian's docker-registry on 127.0.0.1, a token server, a
fault-injecting proxy, and small hand-made images (blobs, config, manifest as bytes)."""
from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import http.server
import io
import json
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY_BIN = "/usr/bin/docker-registry"
USERNAME = "tester"
PASSWORD = "s3cret-pass"
REFRESH_TOKEN = "refresh-token-for-tester"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the registry ----------------------------------------------------------------------------------


@dataclass
class RegistryServer:
    workdir: Path
    auth_yaml: str = ""
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "RegistryServer":
        self.port = free_port()
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: test-secret\n"
            + self.auth_yaml
        )
        log = open(self.workdir / "registry.log", "wb")
        self.process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=log)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("docker-registry exited: " + (self.workdir / "registry.log").read_text())
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/v2/")
                conn.getresponse().read()
                conn.close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def bcrypt_hash(password: str) -> str:
    """An htpasswd bcrypt hash: Python 3.11's crypt (libxcrypt), else htpasswd, else bcrypt."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # removed in Python 3.13

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
        if hashed and hashed.startswith("$2"):
            return hashed
    except ImportError:
        pass
    if shutil.which("htpasswd"):
        out = subprocess.run(["htpasswd", "-nbB", "u", password], capture_output=True, check=True, text=True)
        return out.stdout.strip().split(":", 1)[1]
    import bcrypt  # type: ignore[import-not-found]

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def htpasswd_auth(workdir: Path) -> str:
    path = workdir / "htpasswd"
    path.write_text(f"{USERNAME}:{bcrypt_hash(PASSWORD)}\n")
    return f"auth:\n  htpasswd:\n    realm: basic-realm\n    path: {path}\n"


# -- a token server for `auth: token:` ---------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Issues RS256 JWTs signed with a self-signed cert (openssl CLI) to USERNAME/PASSWORD."""

    workdir: Path
    service: str = "test-registry"
    issuer: str = "test-issuer"
    port: int = 0
    requests: list[dict] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def key(self) -> Path:
        return self.workdir / "token.key"

    @property
    def cert(self) -> Path:
        return self.workdir / "token.crt"

    def auth_yaml(self) -> str:
        return (
            "auth:\n  token:\n"
            f"    realm: http://127.0.0.1:{self.port}/token\n"
            f"    service: {self.service}\n    issuer: {self.issuer}\n    rootcertbundle: {self.cert}\n"
        )

    def start(self) -> "TokenServer":
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
             "-out", str(self.cert), "-days", "2", "-subj", "/CN=test-token-issuer"],
            check=True, capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True, capture_output=True
        ).stdout
        x5c = base64.b64encode(der).decode()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                scopes = query.get("scope", [])
                authorization = self.headers.get("Authorization", "")
                owner.requests.append({"method": "GET", "scopes": scopes, "authorization": authorization})
                expected = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
                self._answer(scopes, "token", authorization == expected)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                scopes = " ".join(form.get("scope", [])).split()
                owner.requests.append({"method": "POST", "scopes": scopes, "form": form})
                valid = form.get("grant_type") == ["refresh_token"] and form.get("refresh_token") == [REFRESH_TOKEN]
                self._answer(scopes, "access_token", valid)

            def _answer(self, scopes: list[str], field_name: str, allowed: bool) -> None:
                if not allowed:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                access = []
                for scope in scopes:
                    kind, name_actions = scope.split(":", 1)
                    name, _, actions = name_actions.rpartition(":")
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
                now = int(time.time())
                header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
                claims = {"iss": owner.issuer, "sub": USERNAME, "aud": owner.service, "exp": now + 300,
                          "nbf": now - 10, "iat": now, "jti": f"{now}-{len(owner.requests)}", "access": access}
                signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
                signature = subprocess.run(
                    ["openssl", "dgst", "-sha256", "-sign", str(owner.key)],
                    input=signing_input.encode(), capture_output=True, check=True,
                ).stdout
                token = signing_input + "." + _b64url(signature)
                body = json.dumps({field_name: token, "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()


# -- a fault-injecting proxy ----------------------------------------------------------------------


@dataclass
class Fault:
    """Applies to requests whose method matches and whose path contains `path_part`; `times` uses."""

    method: str
    path_part: str
    kind: str  # "status500", "truncate", "corrupt", "wrong_length", "huge_manifest", "reset", "redirect"
    times: int = 1


class FaultProxy:
    """A threaded HTTP proxy in front of a registry that misbehaves as told."""

    def __init__(self, upstream_port: int, bind: str = "127.0.0.1") -> None:
        self.upstream_port = upstream_port
        self.bind = bind
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _take_fault(self) -> Fault | None:
                with proxy._lock:
                    for fault in proxy.faults:
                        if fault.times > 0 and fault.method == self.command and fault.path_part in self.path:
                            fault.times -= 1
                            return fault
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = self._take_fault()
                if fault and fault.kind == "status500":
                    proxy.log.append((self.command, self.path, 500))
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault and fault.kind == "reset":
                    proxy.log.append((self.command, self.path, 0))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault and fault.kind == "redirect":
                    proxy.log.append((self.command, self.path, 307))
                    self.send_response(307)
                    self.send_header("Location", f"http://127.0.0.1:{proxy.upstream_port}{self.path}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault and fault.kind == "huge_manifest":
                    payload = b'{"schemaVersion": 2, "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'
                    proxy.log.append((self.command, self.path, 200))
                    self.send_response(200)
                    self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                proxy.log.append((self.command, self.path, response.status))
                declared = len(data)
                if fault and fault.kind == "corrupt" and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                if fault and fault.kind == "wrong_length":
                    declared = len(data) + 7
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(key, value)
                if self.command == "HEAD":
                    self.send_header("Content-Length", response.getheader("Content-Length") or "0")
                    self.end_headers()
                    return
                self.send_header("Content-Length", str(declared))
                self.end_headers()
                if fault and fault.kind == "truncate":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data)
                if fault and fault.kind == "wrong_length":
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        class QuietServer(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:  # noqa: ANN001
                pass  # injected faults break connections on purpose

        self._server = QuietServer((bind, 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"{self.bind}:{self.port}"

    def inject(self, method: str, path_part: str, kind: str, times: int = 1) -> Fault:
        fault = Fault(method, path_part, kind, times)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.log.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- hand-made images -------------------------------------------------------------------------------


def layer_tar(files: dict[str, bytes], compression: str = "gzip") -> bytes:
    """A small deterministic layer: regular files with fixed metadata."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = 1577836800
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    data = raw.getvalue()
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


LAYER_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}


@dataclass
class HandMadeImage:
    blobs: dict[str, bytes]  # digest -> bytes (config and layers)
    config: bytes
    manifest: bytes
    media_type: str

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)


def make_image(
    label: str,
    layers: list[tuple[dict[str, bytes], str]] | None = None,
    *,
    docker: bool = False,
    architecture: str = "amd64",
) -> HandMadeImage:
    """An image whose config and layers make every `label` unique."""
    layers = layers if layers is not None else [({f"etc/{label}": label.encode()}, "gzip")]
    blobs: dict[str, bytes] = {}
    descriptors = []
    diff_ids = []
    for files, compression in layers:
        blob = layer_tar(files, compression)
        uncompressed = layer_tar(files, "none")
        diff_ids.append(sha256(uncompressed))
        blobs[sha256(blob)] = blob
        media = "application/vnd.docker.image.rootfs.diff.tar.gzip" if docker else LAYER_TYPES[compression]
        descriptors.append({"mediaType": media, "digest": sha256(blob), "size": len(blob)})
    config = json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "created": "2020-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/bin"], "Labels": {"test.label": label}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2020-01-01T00:00:00Z", "created_by": f"layer for {label}"}
                        for _ in diff_ids],
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    blobs[sha256(config)] = config
    media_type = (
        "application/vnd.docker.distribution.manifest.v2+json" if docker else "application/vnd.oci.image.manifest.v1+json"
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json" if docker
                else "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": descriptors,
        },
        indent=2,  # not canonical on purpose: a pull must keep the registry's exact bytes
    ).encode()
    return HandMadeImage(blobs, config, manifest, media_type)


def write_oci_layout(directory: Path, image: HandMadeImage, tag: str) -> None:
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for digest, data in [*image.blobs.items(), (image.manifest_digest, image.manifest)]:
        (blobs / digest.split(":")[1]).write_bytes(data)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": image.media_type,
                "digest": image.manifest_digest,
                "size": len(image.manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))


def push_raw(client, repository: str, image, tag: str, chunk_size: int | None = None) -> str:
    for digest, data in image.blobs.items():
        client.upload_blob(repository, digest, len(data), lambda data=data: io.BytesIO(data), chunk_size)
    return client.put_manifest(repository, tag, image.manifest, image.media_type)
