"""The store under load and faults: parallel builds, SIGKILL at random points, a full disk."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_context

import builder
from builder.cli import main as cli_main
from builder.errors import StoreError
from builder.image.inuse import hold_store_for_build
from builder.image.store import Store

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for RUN and tmpfs")


def _cli(root: Path, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "builder.cli", "--root", str(root), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)}, **kwargs,
    )


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return [line for line in mountinfo if str(path) in line]


def test_four_parallel_builds_share_layers(tmp_path: Path, busybox_store) -> None:
    common = "FROM busybox\nCOPY shared.txt /shared.txt\nRUN cp /shared.txt /copied && sleep 0.3\n"
    contexts = []
    for index in range(4):
        text = common + f"RUN echo variant {index} > /variant\n"
        contexts.append(write_context(tmp_path / f"ctx{index}", {"Buildfile": text, "shared.txt": "same in all\n"}))
    processes = [_cli(busybox_store.root, "build", "--progress", "plain", "--metadata-file",
                      str(context / "meta.json"), "-t", f"variant:{i}", str(context))
                 for i, context in enumerate(contexts)]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    manifests = [busybox_store.load_image(f"variant:{i}").manifest for i in range(4)]
    shared_layers = {tuple(layer["digest"] for layer in manifest["layers"][:3]) for manifest in manifests}
    assert len(shared_layers) == 1, "the common steps must give the same layers in every build"
    assert len({manifest["layers"][3]["digest"] for manifest in manifests}) == 4
    assert busybox_store.fsck() == []


def test_sigkill_at_random_points_leaves_a_valid_store_that_is_reused(tmp_path: Path, busybox_store) -> None:
    text = (
        "FROM busybox\n"
        "ARG ROUND\n"
        "RUN echo round $ROUND > /r1 && sleep 0.15\n"
        "COPY data.bin /data.bin\n"
        "RUN cat /data.bin /r1 > /r2 && sleep 0.15\n"
        "RUN echo $ROUND > /r3 && sleep 0.15\n"
        "ENV ROUND=$ROUND\n"
        "RUN ls / > /r4\n"
    )
    context = write_context(tmp_path / "ctx", {"Buildfile": text, "data.bin": os.urandom(300_000)})
    chooser = random.Random(20261123)
    root = busybox_store.root
    for round_number in range(20):
        process = _cli(root, "build", "--progress", "plain", "--build-arg", f"ROUND={round_number}", str(context),
                       start_new_session=True)
        time.sleep(chooser.uniform(0.2, 2.0))
        process.send_signal(signal.SIGKILL)
        _, err = process.communicate(timeout=60)
        # Steps that made a layer (RUN, COPY) and were reported done: their cache entries were
        # written before DONE. Config-only steps (ARG, ENV) are written in one batch at the end of
        # the stage, so a SIGKILL may lose them; they cost nothing to redo.
        layer_steps = set(re.findall(r"^#(\d+) \[[^\]]*\] (?:RUN|COPY) ", err, flags=re.MULTILINE))
        done = set(re.findall(r"^#(\d+) DONE", err, flags=re.MULTILINE))
        layer_steps_done = len(layer_steps & done)
        time.sleep(0.3)  # the sandbox dies with its parent; give the kernel a moment to reap it
        assert _mounts_under(root) == []
        fsck = subprocess.run([sys.executable, "-m", "builder.cli", "--root", str(root), "fsck"],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        result = builder.build(context, root=root, build_args={"ROUND": str(round_number)})
        reused = sum(step.cached for step in result.steps if step.instruction.startswith(("RUN", "COPY")))
        assert reused >= layer_steps_done, (round_number, layer_steps_done, reused, err)
    assert Store.open(root).fsck() == []


def test_full_disk_gives_a_clear_error_and_no_corrupt_entry(tmp_path: Path, capsys) -> None:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], check=True)
    try:
        root = mount_point / "store"
        small = write_context(tmp_path / "small-ctx", {"Buildfile": "FROM scratch\nCOPY a.txt /\n", "a.txt": "small\n"})
        builder.build(small, root=root, tags=["small"])
        big = write_context(tmp_path / "big-ctx", {"Buildfile": "FROM scratch\nCOPY big.bin /\n", "big.bin": os.urandom(5_000_000)})
        with pytest.raises(StoreError, match="no space left"):
            builder.build(big, root=root, tags=["big"], compression="uncompressed")
        code = cli_main(["--root", str(root), "build", "--progress", "quiet", "--compression", "uncompressed", str(big)])
        err = capsys.readouterr().err
        assert code == 1 and "no space left" in err and "Traceback" not in err
        store = Store.open(root)
        assert store.fsck() == []
        assert [name for name, _ in store.tags()] == ["small:latest"]
        assert store.load_image("small").manifest["layers"]
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_prune_and_df(tmp_path: Path, busybox_store, capsys) -> None:
    text = (
        "FROM busybox AS noisy\nRUN head -c 200000 /dev/urandom > /noise\n"
        "FROM scratch\nCOPY --from=noisy /etc/passwd /passwd\n"
    )
    context = write_context(tmp_path / "ctx", {"Buildfile": text})
    builder.build(context, root=busybox_store.root)  # the first stage's layer is only in the build cache
    assert cli_main(["--root", str(busybox_store.root), "df", "--format", "json"]) == 0
    usage = json.loads(capsys.readouterr().out)
    assert usage["build cache"]["bytes"] > 150_000
    assert cli_main(["--root", str(busybox_store.root), "prune", "--keep-storage", "1MB"]) == 0
    assert "removed 0 cache entries" in capsys.readouterr().out
    kept_before = (usage["blobs"]["count"], usage["snapshots"]["count"])
    with hold_store_for_build(busybox_store):  # as a running build does
        assert cli_main(["--root", str(busybox_store.root), "prune", "--all"]) == 0
    assert "builds are running" in capsys.readouterr().err
    assert cli_main(["--root", str(busybox_store.root), "df", "--format", "json"]) == 0
    during = json.loads(capsys.readouterr().out)
    assert (during["blobs"]["count"], during["snapshots"]["count"]) == kept_before, "a running build's layers are kept"
    assert cli_main(["--root", str(busybox_store.root), "prune", "--all"]) == 0
    capsys.readouterr()
    assert cli_main(["--root", str(busybox_store.root), "df", "--format", "json"]) == 0
    usage = json.loads(capsys.readouterr().out)
    assert usage["build cache"]["count"] == 0 and usage["build cache"]["bytes"] == 0
    assert usage["snapshots"]["count"] < kept_before[1], "the cache-only layer's snapshot went"
    assert busybox_store.load_image("busybox").manifest  # tagged images survive a prune
    assert busybox_store.fsck() == []
    again = builder.build(context, root=busybox_store.root)
    assert not any(step.cached for step in again.steps[1:])
