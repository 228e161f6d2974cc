"""Shared by the test_sandbox_*.py files: a busybox layer with a static probe (sandbox_probe.c,
built here with `gcc -static`), and a helper that runs a command in the RUN sandbox."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.sandbox import run
from builder.snapshot import prepare

HERE = Path(__file__).resolve().parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and overlayfs")


def make_probe_layer(dest: Path) -> Path:
    """A layer holding /probe (0755) and /probe-suid (setuid root, 4755)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is not installed; README's install command installs it")
    dest.mkdir(parents=True)
    binary = dest / "probe"
    subprocess.run([gcc, "-static", "-O1", "-o", str(binary), str(HERE / "sandbox_probe.c")],
                   check=True, capture_output=True)
    os.chmod(binary, 0o755)
    shutil.copy(binary, dest / "probe-suid")
    os.chown(dest / "probe-suid", 0, 0)
    os.chmod(dest / "probe-suid", 0o4755)
    return dest


@pytest.fixture(scope="session")
def probe_layer(tmp_path_factory) -> Path:
    return make_probe_layer(tmp_path_factory.mktemp("probe") / "layer")


def run_in_sandbox(layers, work: Path, argv, kind: str = "overlay", **kwargs) -> tuple[int, str]:
    """Run argv in a fresh snapshot over `layers`; (exit status, stdout+stderr)."""
    snap = prepare(list(layers), work, kind)
    chunks: list[bytes] = []
    kwargs.setdefault("env", {})
    kwargs.setdefault("workdir", "/")
    kwargs.setdefault("user", None)
    try:
        status = run(snap, argv, on_output=chunks.append, **kwargs)
    finally:
        snap.cleanup()
    return status, b"".join(chunks).decode("utf-8", "replace")


def results(output: str) -> dict[str, str]:
    """The probe's `what=RESULT` lines as a dict."""
    found = {}
    for line in output.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.replace("_", "").isalnum():
            found[name] = value
    return found


def mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()
