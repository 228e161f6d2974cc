"""Interoperability: GNU tar reads our layers, we read GNU tar's; edge cases of real upper dirs."""
from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

from builder.layer import apply_layer, unpack_layer
from builder.layer.tarwrite import _LayerTarInfo

from .conftest import CAPABILITY, EPOCH, entries_of, layer_bytes, requires_root
from .test_extract import make_tar, member

pytestmark = requires_root


def test_gnu_tar_extracts_our_layer_faithfully(tree: Path, tmp_path: Path) -> None:
    blob, _ = layer_bytes(tree, compression="gzip", source_date_epoch=EPOCH)
    (tmp_path / "layer.tgz").write_bytes(blob)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpzf", str(tmp_path / "layer.tgz"), "-C", str(out)],
        check=True, capture_output=True,
    )
    assert os.getxattr(out / "bin/ping", "security.capability") == CAPABILITY
    assert stat.S_IMODE(os.lstat(out / "bin/ping").st_mode) == 0o4755
    assert os.lstat(out / "a/data").st_ino == os.lstat(out / "z/data-link").st_ino
    assert (out / os.fsdecode(b"home/user/caf\xe9")).read_bytes() == b"latin-1 name\n"
    assert (out / "etc/.wh.removed").stat().st_size == 0
    assert os.lstat(out / "home/user/big-uid").st_uid == 3_000_000


def test_we_read_gnu_tar_archives_with_dot_slash_names(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "dir/sub").mkdir(parents=True)
    (src / "dir/sub/file").write_text("content")
    os.symlink("sub/file", src / "dir/link")
    os.link(src / "dir/sub/file", src / "dir/hard")
    archive = subprocess.run(["tar", "-C", str(src), "-cf", "-", "."], capture_output=True, check=True).stdout
    assert b"./dir/" in archive
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack_layer(io.BytesIO(archive), dest)
    assert (dest / "dir/sub/file").read_text() == "content"
    assert os.readlink(dest / "dir/link") == "sub/file"
    assert os.lstat(dest / "dir/hard").st_ino == os.lstat(dest / "dir/sub/file").st_ino


def test_hardlinked_whiteouts_stay_whiteouts(tmp_path: Path) -> None:
    # overlayfs may link all whiteouts of a layer to one shared 0/0 device inode.
    os.mknod(tmp_path / "gone-a", stat.S_IFCHR, os.makedev(0, 0))
    os.link(tmp_path / "gone-a", tmp_path / "gone-b")
    entries = entries_of(layer_bytes(tmp_path)[0])
    assert [(e.name, e.type) for e in entries] == [(".wh.gone-a", "file"), (".wh.gone-b", "file")]


def test_later_duplicate_entries_win(tmp_path: Path) -> None:
    blob = make_tar([(member("f"), b"first"), (member("f"), b"second"),
                     (member("d/", tarfile.DIRTYPE, mode=0o700), None),
                     (member("d/", tarfile.DIRTYPE, mode=0o750), None)])
    unpack_layer(io.BytesIO(blob), tmp_path)
    assert (tmp_path / "f").read_bytes() == b"second"
    assert stat.S_IMODE(os.lstat(tmp_path / "d").st_mode) == 0o750


def test_whiteout_of_a_directory_removes_the_whole_subtree(tmp_path: Path) -> None:
    (tmp_path / "usr/share/doc").mkdir(parents=True)
    (tmp_path / "usr/share/doc/README").write_text("x")
    apply_layer(io.BytesIO(make_tar([(member("usr/.wh.share"), b"")])), tmp_path)
    assert os.listdir(tmp_path / "usr") == []


def test_huge_sizes_go_into_pax_records() -> None:
    info = _LayerTarInfo("big")
    info.size = 9 << 30  # beyond the 8 GiB ustar limit
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert b" size=9663676416\n" in header
    parsed = tarfile.TarInfo.frombuf(header[512 * 2 : 512 * 3], "utf-8", "surrogateescape")
    assert parsed.name == "big"


def test_aufs_metadata_entries_are_skipped_and_symlink_user_xattrs_tolerated(tmp_path: Path) -> None:
    link = member("link", tarfile.SYMTYPE, linkname="target")
    link.pax_headers = {"SCHILY.xattr.user.note": "x"}  # Linux refuses user.* on symlinks
    blob = make_tar([
        (member(".wh..wh..plnk/", tarfile.DIRTYPE, mode=0o700), None),
        (member(".wh..wh..plnk/123.456"), b"aufs"),
        (link, None),
    ])
    unpack_layer(io.BytesIO(blob), tmp_path)
    assert os.listdir(tmp_path) == ["link"]


def test_implicit_parent_dirs_are_0755_whatever_the_umask(tmp_path: Path) -> None:
    blob = make_tar([(member("no/parents/here"), b"x"), (member("opq/.wh..wh..opq"), b"")])
    old = os.umask(0o077)
    try:
        unpack_layer(io.BytesIO(blob), tmp_path)
    finally:
        os.umask(old)
    for name in ("no", "no/parents", "opq"):
        assert stat.S_IMODE(os.lstat(tmp_path / name).st_mode) == 0o755
