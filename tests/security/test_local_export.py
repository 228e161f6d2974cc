"""Issue 10 item 4: `-o type=local,dest=DIR` writes the image's files and deletes nothing of the
user's: whiteouts and opaque dirs act among the image's own layers only."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from e2e.helpers import write_context

import builder
from builder.errors import OutputError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")

IMAGE = (
    "FROM busybox\n"
    "RUN mkdir -p /tmp/a /data && echo a > /tmp/a/f && echo old > /data/gone && echo keep > /data/kept\n"
    "RUN rm -rf /tmp /data/gone && mkdir -m 1777 /tmp && echo new > /tmp/fresh\n"
    "RUN rm -rf /var\n"
)


def _user_dir(dest: Path) -> dict[str, str]:
    files = {"tmp/mine.txt": "user tmp\n", "var/log/mine.log": "user log\n", "data/gone": "user's own\n",
             "notes.txt": "user notes\n"}
    for name, content in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text(content)
    return files


def test_export_keeps_the_users_files(tmp_path: Path, busybox_store) -> None:
    dest = tmp_path / "out"
    users = _user_dir(dest)
    context = write_context(tmp_path / "ctx", {})
    builder.build(context, buildfile_text=IMAGE, root=busybox_store.root, outputs=[f"type=local,dest={dest}"])
    # Everything the user had is still there, unchanged: the image's deletions are its own business.
    # (data/gone is a path the image wrote and deleted again; the user's file there stays.)
    for name, content in users.items():
        assert (dest / name).read_text() == content, name
    # And the image's final files are all there.
    assert (dest / "tmp/fresh").read_text() == "new\n"
    assert (dest / "data/kept").read_text() == "keep\n"
    assert not (dest / "tmp/a").exists(), "a path the image deleted is not written"
    assert (dest / "bin/busybox").is_file()
    assert oct((dest / "tmp").stat().st_mode & 0o7777) == "0o1777"


def test_export_twice_into_the_same_dir_is_the_same(tmp_path: Path, busybox_store) -> None:
    dest = tmp_path / "out"
    context = write_context(tmp_path / "ctx", {})
    for _ in range(2):
        builder.build(context, buildfile_text=IMAGE, root=busybox_store.root, outputs=[f"type=local,dest={dest}"])
    assert (dest / "tmp/fresh").read_text() == "new\n"


def test_an_image_file_never_replaces_a_users_full_dir(tmp_path: Path, busybox_store) -> None:
    dest = tmp_path / "out"
    (dest / "thing").mkdir(parents=True)
    (dest / "thing/precious").write_text("mine\n")
    context = write_context(tmp_path / "ctx", {})
    with pytest.raises(OutputError) as caught:
        builder.build(context, buildfile_text="FROM busybox\nRUN echo file > /thing\n", root=busybox_store.root,
                      outputs=[f"type=local,dest={dest}"])
    assert "thing" in caught.value.message and "refusing" in caught.value.message
    assert (dest / "thing/precious").read_text() == "mine\n"


def test_a_users_symlink_in_dest_is_replaced_not_followed(tmp_path: Path, busybox_store) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "etc").symlink_to(victim)
    context = write_context(tmp_path / "ctx", {})
    builder.build(context, buildfile_text="FROM busybox\nRUN echo x > /etc/written\n", root=busybox_store.root,
                  outputs=[f"type=local,dest={dest}"])
    assert list(victim.iterdir()) == []
    assert (dest / "etc/written").read_text() == "x\n" and not (dest / "etc").is_symlink()
