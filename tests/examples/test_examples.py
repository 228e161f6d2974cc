"""Every example builds with the commands its README gives and prints what it promises."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")


def builder_cli(root: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, "-m", "builder.cli", "--root", str(root), *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert completed.returncode == 0, f"builder {' '.join(args)} failed:\n{completed.stderr[-3000:]}"
    return completed


def test_hello_example_holds_its_files(tmp_path: Path) -> None:
    out = tmp_path / "rootfs"
    builder_cli(tmp_path / "store", "build", "-t", "hello", "-o", f"type=local,dest={out}", str(EXAMPLES / "hello"))
    assert (out / "app/hello.txt").read_text() == "hello from a FROM scratch image\n"
    assert not (out / "app/notes.tmp").exists()


def test_busybox_example_runs_and_greets(tmp_path: Path) -> None:
    rootfs_tar = tmp_path / "busybox-rootfs.tar"
    subprocess.run(["sh", str(EXAMPLES / "busybox/make-rootfs.sh"), str(rootfs_tar)], check=True, capture_output=True)
    store = tmp_path / "store"
    builder_cli(store, "import", str(rootfs_tar), "busybox:local")
    builder_cli(store, "build", "-t", "busybox-example", str(EXAMPLES / "busybox"))
    ran = builder_cli(store, "run", "--rm", "busybox-example")
    assert ran.stdout == "hello from busybox (version 1.0, running as greeter)\n"


@pytest.mark.slow
def test_debian_python_example_installs_python_with_apt_and_runs(tmp_path: Path) -> None:
    assert shutil.which("mmdebstrap"), ".ci/run installs mmdebstrap"
    rootfs_tar = tmp_path / "debian-rootfs.tar"
    subprocess.run(["sh", str(EXAMPLES / "debian-python/make-rootfs.sh"), str(rootfs_tar)], check=True,
                   capture_output=True, timeout=900)
    store = tmp_path / "store"
    builder_cli(store, "import", str(rootfs_tar), "debian:bookworm-local")
    built = builder_cli(store, "build", "--progress", "plain", "-t", "greeting-app", str(EXAMPLES / "debian-python"))
    assert "app tests passed" in built.stderr
    ran = builder_cli(store, "run", "--rm", "greeting-app")
    assert re.fullmatch(r"hello, builder, from Python 3\.\d+ on Debian\n", ran.stdout), ran.stdout
    user = builder_cli(store, "run", "--rm", "greeting-app", "id", "-un")
    assert user.stdout == "nobody\n"
