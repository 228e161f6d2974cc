"""--insecure-registry as Docker means it: HTTPS without certificate checks, plain HTTP only when
the registry has no TLS at all."""
from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from registry_helpers import REGISTRY_BIN, make_image, push_raw

from builder.errors import RegistryError
from builder.registry import RegistryClient


@pytest.fixture
def tls_registry(tmp_path: Path):
    """docker-registry with a self-signed certificate on 127.0.0.2, a host no rule trusts."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=self-signed-registry"], check=True, capture_output=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'storage'}\n"
        f"http:\n  addr: 127.0.0.2:{port}\n  secret: s\n  tls:\n    certificate: {cert}\n    key: {key}\n"
    )
    process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.2", port), timeout=1) as raw, context.wrap_socket(raw):
                break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        pytest.fail("the TLS registry did not start")
    yield f"127.0.0.2:{port}"
    process.terminate()
    process.wait(10)


def test_self_signed_registry_needs_insecure_and_then_uses_https(tls_registry: str) -> None:
    image = make_image("tls")
    with pytest.raises(RegistryError, match="TLS error") as caught:
        RegistryClient(tls_registry).get_manifest("test/tls", "v1")
    assert f"--insecure-registry {tls_registry}" in caught.value.hint
    client = RegistryClient(tls_registry, insecure=[tls_registry])
    push_raw(client, "test/tls", image, "v1")
    assert client.transport.plain_http is False, "an insecure registry that speaks TLS keeps using it"
    again = RegistryClient(tls_registry, insecure=[tls_registry])
    assert again.get_manifest("test/tls", "v1").data == image.manifest
