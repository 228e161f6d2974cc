"""Fixtures for the store/export tests."""
from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from storehelpers import build_image, make_tree, opaque, whiteout

from builder.image.store import ImageRecord, Store


@pytest.fixture
def three_layer_image(store: Store, tmp_path: Path) -> ImageRecord:
    """base: /a, /dir/{x,y}, /gone; then /b, delete /gone, opaque /dir with /dir/z; then /a changed."""
    l1 = make_tree(tmp_path / "l1", {"a": "one\n", "dir/x": "x\n", "dir/y": "y\n", "gone": "bye\n"})
    l2 = make_tree(tmp_path / "l2", {"b": "two\n", "dir/z": "z\n"})
    whiteout(l2 / "gone")
    opaque(l2 / "dir")
    l3 = make_tree(tmp_path / "l3", {"a": "three\n"})
    return build_image(store, [l1, l2, l3], "app:1")


@pytest.fixture
def local_registry(tmp_path):
    """A real docker-registry on 127.0.0.1 (plain HTTP); yields its host:port."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed; .ci/run installs it")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {tmp_path / 'registry-data'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/v2/")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("docker-registry did not start")
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
