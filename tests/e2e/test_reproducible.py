"""Same inputs, same digest: whatever the umask, time zone, working directory and file times."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import layer_members, write_context

import builder
from builder.cli import main as cli_main
from builder.commands.diff import diff_images
from builder.image.importer import import_rootfs
from builder.image.store import Store

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")


def _build_in_subprocess(store_root: Path, context: Path, *, umask: int, tz: str, cwd: Path, compression: str) -> str:
    metadata = cwd / f"meta-{umask:o}.json"
    script = (
        "import os, sys; os.umask(int(sys.argv[1], 8)); "
        "from builder.cli import main; sys.exit(main(sys.argv[2:]))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, f"{umask:o}", "--root", str(store_root), "build", "--progress", "plain",
         "--compression", compression, "--metadata-file", str(metadata), str(context)],
        cwd=cwd, capture_output=True, text=True,
        env={**os.environ, "TZ": tz, "SOURCE_DATE_EPOCH": "1700000000", "PYTHONPATH": str(REPO)},
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(metadata.read_text())["containerimage.digest"]


def _age_every_file(root: Path) -> None:
    """New mtimes and (through a chmod round trip) new ctimes, contents and modes unchanged."""
    later = time.time() + 12345
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not path.is_symlink():
            os.chmod(path, mode | 0o200)
            os.chmod(path, mode & 0o7777)
            os.utime(path, (later, later))


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("example", ["hello", "busybox"])
def test_examples_build_to_the_same_digest_anywhere(tmp_path: Path, busybox_tar: Path, example: str, compression: str) -> None:
    digests = []
    for run, (umask, tz) in enumerate([(0o022, "UTC"), (0o077, "Asia/Kathmandu")]):
        store = Store.open(tmp_path / f"store{run}")
        import_rootfs(store, busybox_tar, "busybox:local")
        context = tmp_path / f"ctx{run}" / example
        shutil.copytree(EXAMPLES / example, context, symlinks=True)
        if run:
            _age_every_file(context)
        workdir = tmp_path / f"cwd{run}"
        workdir.mkdir()
        digests.append(_build_in_subprocess(store.root, context, umask=umask, tz=tz, cwd=workdir, compression=compression))
    assert digests[0] == digests[1]


def test_epoch_clamps_new_files_but_keeps_the_base_as_it_was(tmp_path: Path, busybox_store) -> None:
    base = busybox_store.load_image("busybox")
    context = write_context(tmp_path / "ctx", {"new.txt": "new\n"})
    old = context / "old.txt"
    old.write_text("old\n")
    os.utime(old, (1000, 1000))
    text = "FROM busybox\nCOPY new.txt old.txt /files/\nRUN rm /etc/group && touch /made-now\n"
    result = builder.build(context, buildfile_text=text, root=busybox_store.root, source_date_epoch=1700000000)
    assert result.manifest["layers"][0] == base.manifest["layers"][0]
    assert result.config["history"][: len(base.config["history"])] == base.config["history"]
    assert all(entry["created"] == "2023-11-14T22:13:20Z" for entry in result.config["history"][len(base.config["history"]):])
    assert result.manifest["annotations"]["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    copied = layer_members(busybox_store, result.manifest["layers"][1]["digest"])
    assert copied["files/old.txt"].mtime == 1000
    assert copied["files/new.txt"].mtime == 1700000000
    ran = layer_members(busybox_store, result.manifest["layers"][2]["digest"])
    assert ran["made-now"].mtime == 1700000000
    assert ran["etc/.wh.group"].mtime == 1700000000
    for member in ran.values():
        assert member.uname == "" and member.gname == ""


def test_reproducible_flag_uses_epoch_zero(tmp_path: Path) -> None:
    events = []
    result = builder.build(EXAMPLES / "hello", root=tmp_path / "s", reproducible=True, on_event=events.append)
    assert result.config["created"] == "1970-01-01T00:00:00Z"
    assert any("timestamp 0" in event.text for event in events)


def test_builder_diff_names_what_differs(tmp_path: Path, capsys) -> None:
    root = tmp_path / "s"
    context = write_context(tmp_path / "ctx", {"Buildfile": "FROM scratch\nCOPY a.txt /\nENV X=1\n", "a.txt": "one\n"})
    builder.build(context, root=root, tags=["first"], source_date_epoch=1)
    (context / "a.txt").write_text("two\n")
    builder.build(context, root=root, tags=["second"], source_date_epoch=2)
    difference = diff_images(Store.open(root), "first", None, "second")
    fields = {item["field"] for item in difference.config}
    assert "created" in fields and "history[0].created" in fields
    assert len(difference.layers) == 1
    changed = {(item["path"], item["field"]) for item in difference.layers[0].files}
    assert ("a.txt", "sha256") in changed
    assert cli_main(["--root", str(root), "diff", "first", "second"]) == 1
    out = capsys.readouterr().out
    assert "a.txt: sha256" in out and "config created" in out
    assert cli_main(["--root", str(root), "diff", "first", "first"]) == 0
    assert capsys.readouterr().out.startswith("identical: sha256:")


def test_later_steps_see_the_times_the_layer_records(tmp_path: Path, busybox_store) -> None:
    """A RUN reading times of files an earlier RUN made sees the clamped time, as it would on a
    machine that got that layer from a registry (e.g. .pyc headers embed source mtimes)."""
    context = write_context(tmp_path / "ctx", {})
    text = "FROM busybox\nRUN echo made > /made\nRUN stat -c %Y /made > /seen-mtime\n"
    out = tmp_path / "out"
    builder.build(context, buildfile_text=text, root=busybox_store.root, source_date_epoch=1700000000,
                  outputs=[f"type=local,dest={out}"])
    assert (out / "seen-mtime").read_text() == "1700000000\n"
