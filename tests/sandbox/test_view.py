"""LayeredView and flatten over layer dirs in the overlay-upper format (no mounts)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder.snapshot.view import LayeredView, flatten
from builder.userns import opaque_xattr
from sandbox.helpers import make_layer


@pytest.fixture
def stack(tmp_path: Path) -> list[Path]:
    low = make_layer(tmp_path / "low", {
        "etc": None, "etc/passwd": "root:x:0:0::/root:/bin/sh\n", "etc/gone": "x", "etc/kept": "k",
        "opt": None, "opt/old": None, "opt/old/a": "a", "opt/keep": "keep",
        "real": None, "real/file": "real file\n",
        "abs": ("link", "/real"), "rel": ("link", "real"), "up": ("link", "../../../real"),
        "loop1": ("link", "loop2"), "loop2": ("link", "loop1"),
        "escape": ("link", "/etc/../../../../etc"),
        "was_dir": None, "was_dir/inner": "i",
    })
    mid = make_layer(tmp_path / "mid", {
        "etc": None, "etc/gone": "WHITEOUT", "etc/new": "n",
        "opt": None, "opt/old": "OPAQUE", "opt/old/b": "b",
        "was_dir": "now a file\n",
    })
    top = make_layer(tmp_path / "top", {"etc": None, "etc/kept": "k2", "etc/top": ("link", "kept")})
    return [low, mid, top]


def test_lookup_honours_whiteouts_and_layers(stack):
    view = LayeredView(stack)
    assert view.lookup("/etc/gone") is None
    assert view.lookup("/etc/new") is not None
    assert view.read_bytes("/etc/kept") == b"k2"
    assert view.host_path("/etc/kept") == stack[2] / "etc/kept"
    assert view.host_path("/etc/passwd") == stack[0] / "etc/passwd"
    assert view.lookup("/nope") is None and view.lookup("/nope/deeper") is None


def test_listdir_merges_and_opaque_hides_lower(stack):
    view = LayeredView(stack)
    assert view.listdir("/etc") == ["kept", "new", "passwd", "top"]
    assert view.listdir("/opt/old") == ["b"]
    assert view.listdir("/opt") == ["keep", "old"]
    assert "abs" in view.listdir("/")


def test_dir_replaced_by_file(stack):
    view = LayeredView(stack)
    assert stat.S_ISREG(view.lookup("/was_dir").st_mode)
    assert view.lookup("/was_dir/inner") is None
    assert not view.is_dir("/was_dir")
    assert view.listdir("/was_dir") == []


def test_symlinks_resolve_inside_the_view(stack):
    view = LayeredView(stack)
    # Intermediate symlinks are followed in the image, never on the host.
    assert view.read_bytes("/abs/file") == b"real file\n"
    assert view.read_bytes("/rel/file") == b"real file\n"
    assert view.read_bytes("/up/file") == b"real file\n"  # `..` stops at the image's root
    assert view.resolve("/escape/passwd") == "/etc/passwd"
    assert view.is_dir("/abs") and stat.S_ISLNK(view.lookup("/abs").st_mode)
    assert stat.S_ISDIR(view.lookup("/abs", follow=True).st_mode)
    assert view.read_bytes("/etc/top") == b"k2"
    assert view.lookup("/loop1/x") is None  # a loop is "not found", not a hang
    assert view.listdir("/abs") == ["file"]


def test_host_paths_never_leave_the_layers(tmp_path):
    layer = make_layer(tmp_path / "l", {"hostetc": ("link", "/etc"), "dotdot": ("link", "../../..")})
    view = LayeredView([layer])
    assert view.read_bytes("/hostetc/passwd") is None  # /etc/passwd of the host is not in the image
    assert view.lookup("/dotdot/etc") is None


def test_flatten_merges_and_links(stack, tmp_path):
    dest = tmp_path / "flat"
    before = {p: os.lstat(p).st_mtime_ns for layer in stack for p in layer.rglob("*")}
    flatten(stack, dest)
    names = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert names == ["abs", "escape", "etc", "etc/kept", "etc/new", "etc/passwd", "etc/top",
                     "loop1", "loop2", "opt", "opt/keep", "opt/old", "opt/old/b", "real", "real/file",
                     "rel", "up", "was_dir"]
    assert (dest / "etc/kept").read_text() == "k2"
    assert os.lstat(dest / "etc/kept").st_ino == os.lstat(stack[2] / "etc/kept").st_ino  # hardlinked
    assert os.readlink(dest / "abs") == "/real"
    assert opaque_xattr() not in os.listxattr(dest / "opt/old")
    assert not [p for p in dest.rglob("*") if stat.S_ISCHR(os.lstat(p).st_mode)]
    assert os.lstat(dest / "etc").st_mtime_ns == os.lstat(stack[2] / "etc").st_mtime_ns
    after = {p: os.lstat(p).st_mtime_ns for layer in stack for p in layer.rglob("*")}
    assert after == before  # the layer dirs are untouched


def test_flatten_copy_mode_is_independent(stack, tmp_path):
    dest = tmp_path / "flat"
    flatten(stack, dest, hardlink=False)
    assert os.lstat(dest / "etc/kept").st_ino != os.lstat(stack[2] / "etc/kept").st_ino
    (dest / "etc/kept").write_text("changed")
    assert (stack[2] / "etc/kept").read_text() == "k2"


def test_flatten_keeps_hardlink_groups(tmp_path):
    layer = make_layer(tmp_path / "l", {"a": "same", "b": ("hardlink", "a")})
    flatten([layer], tmp_path / "f1", hardlink=False)
    assert os.lstat(tmp_path / "f1/a").st_ino == os.lstat(tmp_path / "f1/b").st_ino
    flatten([layer], tmp_path / "f2", hardlink=False, keep_hardlinks=False)
    assert os.lstat(tmp_path / "f2/a").st_ino != os.lstat(tmp_path / "f2/b").st_ino
