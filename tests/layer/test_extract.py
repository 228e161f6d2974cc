"""unpack_layer / apply_layer / apply_layer_dir: faithful round trips and overlay semantics."""
from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from builder.layer import apply_layer, apply_layer_dir, unpack_layer
from builder.userns import opaque_xattr

from .conftest import CAPABILITY, EPOCH, OLD_MTIME, layer_bytes, requires_root

pytestmark = requires_root


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return out.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    info.mtime = EPOCH
    return info


@pytest.mark.parametrize("compression", ["gzip", "zstd", "uncompressed"])
def test_round_trip_gives_the_same_diff_id(tree: Path, tmp_path: Path, compression: str) -> None:
    blob, digests = layer_bytes(tree, compression=compression, source_date_epoch=EPOCH)
    dest = tmp_path / "unpacked"
    dest.mkdir()
    unpack_layer(io.BytesIO(blob), dest)
    again, digests_again = layer_bytes(dest, compression=compression, source_date_epoch=EPOCH)
    assert digests_again.diff_id == digests.diff_id
    assert again == blob


def test_unpacked_dir_is_in_overlay_upper_format(tree: Path, tmp_path: Path) -> None:
    blob, _ = layer_bytes(tree, source_date_epoch=EPOCH)
    dest = tmp_path / "unpacked"
    dest.mkdir()
    unpack_layer(io.BytesIO(blob), dest)
    removed = os.lstat(dest / "etc/removed")
    assert stat.S_ISCHR(removed.st_mode) and removed.st_rdev == 0
    assert not (dest / "etc/.wh.removed").exists()
    assert os.getxattr(dest / "var/cache", opaque_xattr()) == b"y"
    assert not (dest / "var/cache/.wh..wh..opq").exists()
    assert os.getxattr(dest / "var/cache", "user.cache") == b"1"
    ping = os.lstat(dest / "bin/ping")
    assert stat.S_IMODE(ping.st_mode) == 0o4755
    assert os.getxattr(dest / "bin/ping", "security.capability") == CAPABILITY
    assert os.readlink(dest / "bin/sh") == "busybox"
    data, link = os.lstat(dest / "a/data"), os.lstat(dest / "z/data-link")
    assert data.st_ino == link.st_ino and data.st_nlink == 2
    assert (data.st_uid, data.st_gid, data.st_mtime) == (12, 34, OLD_MTIME)
    assert stat.S_ISFIFO(os.lstat(dest / "run/fifo").st_mode)
    null = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(os.lstat(dest / "dev/loop0").st_mode)
    assert stat.S_IMODE(os.lstat(dest / "empty").st_mode) == 0o1777
    srv = os.lstat(dest / "srv")
    assert stat.S_IMODE(srv.st_mode) == 0o2775 and srv.st_gid == 50
    assert os.lstat(dest / "bin").st_mtime == EPOCH  # dir mtimes set after their contents
    assert os.lstat(dest / "home/user").st_uid == 1000
    assert (dest / os.fsdecode(b"home/user/caf\xe9")).read_bytes() == b"latin-1 name\n"
    assert (dest / "home/user/new\nline").read_bytes() == b"newline\n"
    assert os.lstat(dest / "bin/sh").st_mtime == EPOCH


def test_sparse_content_stays_sparse(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.seek(64 << 20)
        f.write(b"end")
    blob, digests = layer_bytes(src, compression="zstd")
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack_layer(io.BytesIO(blob), dest)
    st = os.stat(dest / "sparse")
    assert st.st_size == (64 << 20) + 3
    assert st.st_blocks * 512 < 1 << 20
    assert layer_bytes(dest, compression="zstd")[1].diff_id == digests.diff_id


def _merged_base(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/removed").write_text("old")
    (root / "etc/passwd").write_text("old passwd")
    (root / "var/cache/old-dir/sub").mkdir(parents=True)
    (root / "var/cache/old-file").write_text("lower")
    (root / "bin").mkdir()
    (root / "bin/ping").write_text("old ping")
    (root / "keep-me").write_text("untouched")
    return root


def test_apply_layer_deletes_whiteouts_and_empties_opaque_dirs(tree: Path, tmp_path: Path) -> None:
    merged = _merged_base(tmp_path / "merged")
    blob, _ = layer_bytes(tree, source_date_epoch=EPOCH)
    apply_layer(io.BytesIO(blob), merged)
    assert not os.path.lexists(merged / "etc/removed")
    assert (merged / "etc/passwd").read_text().startswith("root:")
    assert sorted(os.listdir(merged / "var/cache")) == ["keep"]
    assert opaque_xattr() not in os.listxattr(merged / "var/cache")
    assert (merged / "bin/ping").read_bytes() == b"ping binary\n"
    assert (merged / "keep-me").read_text() == "untouched"
    assert os.lstat(merged / "a/data").st_ino == os.lstat(merged / "z/data-link").st_ino


def test_apply_layer_opaque_marker_after_children_keeps_them(tmp_path: Path) -> None:
    merged = _merged_base(tmp_path / "merged")
    blob = make_tar([
        (member("var/cache/", tarfile.DIRTYPE, mode=0o755), None),
        (member("var/cache/new"), b"new"),
        (member("var/cache/.wh..wh..opq"), b""),
    ])
    apply_layer(io.BytesIO(blob), merged)
    assert sorted(os.listdir(merged / "var/cache")) == ["new"]


def test_apply_layer_replaces_dir_with_file_and_file_with_dir(tmp_path: Path) -> None:
    merged = _merged_base(tmp_path / "merged")
    blob = make_tar([
        (member("var/cache"), b"now a file"),
        (member("keep-me/", tarfile.DIRTYPE, mode=0o700), None),
        (member("keep-me/inner"), b"inner"),
    ])
    apply_layer(io.BytesIO(blob), merged)
    assert (merged / "var/cache").read_bytes() == b"now a file"
    assert (merged / "keep-me/inner").read_bytes() == b"inner"
    assert stat.S_IMODE(os.lstat(merged / "keep-me").st_mode) == 0o700


def test_apply_layer_dir_matches_apply_layer(tree: Path, tmp_path: Path) -> None:
    via_tar = _merged_base(tmp_path / "via-tar")
    via_dir = _merged_base(tmp_path / "via-dir")
    blob, _ = layer_bytes(tree, source_date_epoch=EPOCH)
    apply_layer(io.BytesIO(blob), via_tar)
    # The tar clamps mtimes to EPOCH: give the layer dir the same mtimes by unpacking it first.
    layer_dir = tmp_path / "layer"
    layer_dir.mkdir()
    unpack_layer(io.BytesIO(blob), layer_dir)
    apply_layer_dir(layer_dir, via_dir)
    assert not os.path.lexists(via_dir / "etc/removed")
    assert sorted(os.listdir(via_dir / "var/cache")) == ["keep"]
    assert opaque_xattr() not in os.listxattr(via_dir / "var/cache")
    assert os.getxattr(via_dir / "bin/ping", "security.capability") == CAPABILITY
    for root in (via_tar, via_dir):  # same mtimes on the base dirs, which the layer did not name
        for name in ("etc", "var", "."):
            os.utime(root / name, (EPOCH, EPOCH))
    assert layer_bytes(via_tar, source_date_epoch=EPOCH)[1] == layer_bytes(via_dir, source_date_epoch=EPOCH)[1]


def test_apply_layer_dir_opaque_root_and_stacking(tmp_path: Path) -> None:
    merged = _merged_base(tmp_path / "merged")
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    os.mknod(lower / "etc/passwd", stat.S_IFCHR, os.makedev(0, 0))
    (lower / "etc/group").write_text("group")
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/passwd").write_text("recreated")
    apply_layer_dir(lower, merged)
    assert not os.path.lexists(merged / "etc/passwd")
    apply_layer_dir(upper, merged)
    assert (merged / "etc/passwd").read_text() == "recreated"
    assert (merged / "etc/group").read_text() == "group"


def test_apply_layer_takes_a_layer_dir_path_too(tmp_path: Path) -> None:
    merged = _merged_base(tmp_path / "merged")
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    os.mknod(layer / "etc/removed", stat.S_IFCHR, os.makedev(0, 0))
    (layer / "new").write_text("new")
    apply_layer(layer, merged)
    assert not os.path.lexists(merged / "etc/removed")
    assert (merged / "new").read_text() == "new"
    assert (merged / "etc/passwd").read_text() == "old passwd"
