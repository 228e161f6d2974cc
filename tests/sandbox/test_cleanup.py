"""Nothing is left behind: no mount in the host's namespace (during or after a run, after a
failure, after the builder is killed mid-RUN by SIGINT or SIGKILL) and no process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.errors import SandboxError
from builder.sandbox import run
from builder.snapshot import prepare
from sandbox.helpers import make_layer

REPO = Path(__file__).resolve().parents[2]

BUILDER_SCRIPT = r"""
import signal
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
# What a CLI does: SIGTERM becomes an exception, so `finally` blocks run (SIGINT already is one).
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
from builder.snapshot import prepare
from builder.sandbox import run

layer, work, kind, marker = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]
snap = prepare([layer], work, kind)

def on_output(chunk):
    if b"ready" in chunk:
        print("READY", flush=True)

try:
    run(snap, ["/bin/sh", "-c", f"echo ready; sleep {marker} & sleep {marker}"], env={}, workdir="/",
        user=None, on_output=on_output)
finally:
    snap.cleanup()
"""


def mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


def processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"python" not in cmdline:
            found.append(int(pid))
    return found


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("kind", ["overlay", "copy"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_killed_builder_leaves_no_process_and_no_mount(busybox_layer, tmp_path, kind, sig):
    marker = f"{1000 + os.getpid() % 1000}.{sig.value}{len(kind)}7"
    work = tmp_path / "work"
    builder = subprocess.Popen(
        [sys.executable, "-c", BUILDER_SCRIPT, str(REPO), str(busybox_layer), str(work), kind, marker],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        line = builder.stdout.readline()
        assert line == b"READY\n", builder.stderr.read()
        assert wait_until(lambda: len(processes_with(marker)) == 2)
        # The rootfs is mounted only inside the sandbox's namespace, never in ours.
        assert str(work) not in mountinfo()
        builder.send_signal(sig)
        builder.wait(timeout=20)
    finally:
        if builder.poll() is None:
            builder.kill()
            builder.wait()
    assert wait_until(lambda: not processes_with(marker)), processes_with(marker)
    # Other tests and the docker daemon mount overlays meanwhile, so only ours count: a leaked
    # overlay of this builder names tmp_path in its mount point or in its upperdir/workdir option.
    assert str(tmp_path) not in mountinfo()
    if sig != signal.SIGKILL:
        assert not work.exists()  # the builder had the chance to clean up, and did


def test_failures_leave_no_mount(busybox_layer, tmp_path):
    for index, argv in enumerate([["/bin/sh", "-c", "exit 3"], ["no-such-program"]]):
        snap = prepare([busybox_layer], tmp_path / f"w{index}", "overlay")
        try:
            try:
                run(snap, argv, env={}, workdir="/", user=None, on_output=lambda b: None)
            except SandboxError:
                pass
        finally:
            snap.cleanup()
    # Only mounts naming tmp_path are ours (see above): the snapshot's upper and work dirs live there.
    assert str(tmp_path) not in mountinfo()


def test_on_output_raising_kills_the_sandbox(busybox_layer, tmp_path):
    marker = f"{2000 + os.getpid() % 1000}.5"
    snap = prepare([busybox_layer], tmp_path / "w", "overlay")

    def explode(chunk: bytes) -> None:
        raise RuntimeError("consumer failed")

    try:
        with pytest.raises(RuntimeError):
            run(snap, ["/bin/sh", "-c", f"echo go; sleep {marker}"], env={}, workdir="/", user=None,
                on_output=explode)
    finally:
        snap.cleanup()
    assert wait_until(lambda: not processes_with(marker))


@pytest.mark.parametrize("kind", ["overlay", "copy"])
def test_120_layers(busybox_layer, tmp_path, kind):
    # Long host paths on purpose: without short names the options would pass one page.
    deep = tmp_path / ("long-directory-name-" * 8) / ("another-long-component-" * 6)
    layers = [busybox_layer]
    for index in range(120):
        entries: dict[str, object] = {"layers": None, f"layers/f{index:03d}": f"{index}\n"}
        if index == 60:
            entries["layers/f010"] = "WHITEOUT"
        if index == 119:
            entries["layers/f000"] = "changed\n"
        layers.append(make_layer(deep / f"layer-number-{index:03d}", entries))
    assert sum(len(str(p)) for p in layers) > os.sysconf("SC_PAGE_SIZE")
    snap = prepare(layers, tmp_path / "w", kind)
    chunks: list[bytes] = []
    try:
        status = run(snap, ["/bin/sh", "-c", "ls /layers | wc -l; cat /layers/f000 /layers/f119; "
                            "rm /layers/f050"],
                     env={}, workdir="/", user=None, on_output=chunks.append)
        snap.diff(tmp_path / "diff")
    finally:
        snap.cleanup()
    assert status == 0, chunks
    assert b"".join(chunks).split() == [b"119", b"changed", b"119"]
    assert os.listdir(tmp_path / "diff/layers") == ["f050"]


def test_more_layers_than_overlay_takes(tmp_path):
    from builder.snapshot import prepare

    layers = [make_layer(tmp_path / "layers" / str(i), {f"f{i}": "x"}) for i in range(501)]
    with pytest.raises(SandboxError) as caught:
        prepare(layers, tmp_path / "w1", "overlay")
    assert "--snapshotter=copy" in caught.value.hint
    snap = prepare(layers, tmp_path / "w2", "auto")
    try:
        assert snap.kind == "copy"
        assert len(list(snap.rootfs.iterdir())) == 501
    finally:
        snap.cleanup()
