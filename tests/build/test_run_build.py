"""RUN steps on a busybox base built here: layers, failures, multi-stage, and what the image runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import builder
from builder.cli import main as cli_main
from builder.errors import RunError

from helpers import layer_members, write_context

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")


def _our_mounts(store_root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return [line for line in mountinfo if str(store_root) in line]


@pytest.mark.parametrize("snapshotter", ["overlay", "copy"])
def test_run_layers_hold_changes_and_whiteouts(tmp_path: Path, busybox_store, snapshotter: str) -> None:
    context = write_context(tmp_path / "ctx", {})
    text = (
        "FROM busybox\n"
        "RUN echo built > /hello && rm /etc/group && mkdir -p /opt/tool && chmod 0700 /root\n"
        "RUN ln /hello /opt/tool/hardlink && ln -s /hello /opt/tool/symlink && rm -rf /home && mkdir /home\n"
    )
    result = builder.build(
        context, buildfile_text=text, root=busybox_store.root, tags=["t"], snapshotter=snapshotter,
        source_date_epoch=1700000000,
    )
    layers = result.manifest["layers"]
    first = layer_members(busybox_store, layers[-2]["digest"])
    assert first["hello"].isfile() and first["hello"].size == len("built\n")
    assert "etc/.wh.group" in first
    assert first["root"].mode & 0o777 == 0o700
    assert "opt/tool" in first
    for injected in ("etc/hosts", "etc/resolv.conf", "etc/hostname", "proc", "dev", "sys"):
        assert injected not in first, f"{injected} leaked into the layer"
    second = layer_members(busybox_store, layers[-1]["digest"])
    assert second["opt/tool/hardlink"].islnk() or second["hello"].islnk()
    assert second["opt/tool/symlink"].issym() and second["opt/tool/symlink"].linkname == "/hello"
    assert "home/.wh..wh..opq" in second
    assert _our_mounts(busybox_store.root) == []


def test_both_snapshotters_give_identical_layers(tmp_path: Path, busybox_tar: Path) -> None:
    from builder.image.importer import import_rootfs
    from builder.image.store import Store

    text = (
        "FROM busybox\n"
        "RUN echo a > /a && rm /etc/passwd && mkdir -p /x/y && echo z > /x/y/z && chmod 600 /etc/group\n"
    )
    digests = []
    for snapshotter in ("overlay", "copy"):
        store = Store.open(tmp_path / snapshotter)
        import_rootfs(store, busybox_tar, "busybox")
        result = builder.build(
            write_context(tmp_path / "ctx", {}), buildfile_text=text, root=store.root,
            snapshotter=snapshotter, source_date_epoch=1700000000,
        )
        digests.append([layer["digest"] for layer in result.manifest["layers"]])
    assert digests[0] == digests[1]


def test_failing_run_reports_step_and_output_and_keeps_store_clean(tmp_path: Path, busybox_store, capsys) -> None:
    context = write_context(tmp_path / "ctx", {})
    text = "FROM busybox\nRUN echo first-step\nRUN echo about to fail && exit 3\n"
    with pytest.raises(RunError) as caught:
        builder.build(context, buildfile_text=text, root=busybox_store.root, tags=["never"])
    assert caught.value.exit_status == 3
    assert caught.value.pos.line == 3
    assert "about to fail" in caught.value.render()
    assert [name for name, _ in busybox_store.tags()] == ["docker.io/library/busybox:latest"] or all(
        "never" not in name for name, _ in busybox_store.tags()
    )
    assert _our_mounts(busybox_store.root) == []
    (context / "Buildfile").write_text(text)
    code = cli_main(["--root", str(busybox_store.root), "build", "--progress", "plain", str(context)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Buildfile:3:1: RUN failed with exit code 3" in err and "Traceback" not in err
    assert busybox_store.fsck() == []


def test_multi_stage_copy_from_and_user_and_workdir(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {"src.txt": "source\n"})
    text = (
        "FROM busybox AS build\n"
        "WORKDIR /work\n"
        "COPY src.txt .\n"
        "RUN tr a-z A-Z < src.txt > out.txt && id -u > uid.txt\n"
        "FROM busybox\n"
        "COPY --from=build --chown=app:app /work/out.txt /home/app/\n"
        "USER app\n"
        "WORKDIR /home/app/sub\n"
        "RUN id > id.txt && pwd > pwd.txt\n"
        "CMD [\"cat\", \"/home/app/out.txt\"]\n"
    )
    out = tmp_path / "out"
    builder.build(context, buildfile_text=text, root=busybox_store.root, tags=["multi"], outputs=[f"type=local,dest={out}"])
    assert (out / "home/app/out.txt").read_text() == "SOURCE\n"
    assert (out / "home/app/out.txt").stat().st_uid == 1000
    assert (out / "home/app/sub/id.txt").read_text().startswith("uid=1000(app) gid=1000(app)")
    assert (out / "home/app/sub/pwd.txt").read_text() == "/home/app/sub\n"
    assert not (out / "work").exists()


def test_builder_run_executes_the_built_image(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {})
    text = "FROM busybox\nENV WHO=world\nRUN echo \"hello $WHO\" > /greeting\nCMD [\"cat\", \"/greeting\"]\n"
    builder.build(context, buildfile_text=text, root=busybox_store.root, tags=["greeter"])
    completed = subprocess.run(
        [sys.executable, "-m", "builder.cli", "--root", str(busybox_store.root), "run", "--rm", "greeter"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "hello world\n"
    assert _our_mounts(busybox_store.root) == []
