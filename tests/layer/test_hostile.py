"""Hostile and broken archives: ArchiveError, and nothing written outside the target."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from builder.errors import ArchiveError, BuildError
from builder.layer import apply_layer, iter_layer_entries, open_layer_stream, unpack_layer

from .conftest import requires_root
from .test_extract import make_tar, member

pytestmark = requires_root


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(dest, outside): dest is where we extract; outside must never change."""
    dest = tmp_path / "box" / "dest"
    dest.mkdir(parents=True)
    outside = tmp_path / "box" / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    return dest, outside


def _snapshot(root: Path) -> dict[str, tuple[int, bytes | str | None]]:
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = os.lstat(path)
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else (
                os.readlink(path) if path.is_symlink() else None)
            result[str(path.relative_to(root))] = (st.st_mode, content)
    return result


@pytest.mark.parametrize("extract", [unpack_layer, apply_layer])
@pytest.mark.parametrize("case", [
    "absolute", "dotdot", "dotdot-inner", "through-symlink", "through-abs-symlink",
    "hardlink-dotdot", "hardlink-absolute", "hardlink-through-symlink", "hardlink-missing",
])
def test_escapes_are_refused(sandbox, extract, case: str) -> None:
    dest, outside = sandbox
    box = dest.parent
    members = {
        "absolute": [(member(str(outside / "abs")), b"x")],
        "dotdot": [(member("../outside/dotdot"), b"x")],
        "dotdot-inner": [(member("a/../../outside/inner"), b"x")],
        "through-symlink": [
            (member("link", tarfile.SYMTYPE, linkname="../outside"), None),
            (member("link/evil"), b"evil"),
        ],
        "through-abs-symlink": [
            (member("link", tarfile.SYMTYPE, linkname=str(outside)), None),
            (member("link/sub/", tarfile.DIRTYPE), None),
        ],
        "hardlink-dotdot": [(member("h", tarfile.LNKTYPE, linkname="../outside/secret"), None)],
        "hardlink-absolute": [(member("h", tarfile.LNKTYPE, linkname=str(outside / "secret")), None)],
        "hardlink-through-symlink": [
            (member("link", tarfile.SYMTYPE, linkname=str(outside)), None),
            (member("h", tarfile.LNKTYPE, linkname="link/secret"), None),
        ],
        "hardlink-missing": [(member("h", tarfile.LNKTYPE, linkname="not/there"), None)],
    }[case]
    before = _snapshot(box)
    with pytest.raises(ArchiveError) as caught:
        extract(io.BytesIO(make_tar(members)), dest)
    assert isinstance(caught.value, BuildError)
    assert caught.value.message
    after = _snapshot(box)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert all(k.startswith("dest") for k in changed), changed
    assert (outside / "secret").read_text() == "secret"
    assert os.listdir(outside) == ["secret"]


def test_escape_messages_say_what_is_wrong(sandbox) -> None:
    dest, outside = sandbox
    with pytest.raises(ArchiveError, match="absolute"):
        unpack_layer(io.BytesIO(make_tar([(member("/etc/x"), b"")])), dest)
    with pytest.raises(ArchiveError, match=r"'\.\.'"):
        unpack_layer(io.BytesIO(make_tar([(member("../x"), b"")])), dest)
    with pytest.raises(ArchiveError, match="not a directory"):
        unpack_layer(io.BytesIO(make_tar([
            (member("l", tarfile.SYMTYPE, linkname=str(outside)), None), (member("l/x"), b"")])), dest)


def test_existing_symlinks_in_the_target_are_replaced_not_followed(sandbox) -> None:
    dest, outside = sandbox
    os.symlink(outside, dest / "dir-link")
    os.symlink(outside / "secret", dest / "file-link")
    blob = make_tar([
        (member("dir-link/", tarfile.DIRTYPE, mode=0o755), None),
        (member("dir-link/inside"), b"inside"),
        (member("file-link"), b"overwritten"),
    ])
    apply_layer(io.BytesIO(blob), dest)
    assert (outside / "secret").read_text() == "secret"
    assert os.listdir(outside) == ["secret"]
    assert not (dest / "dir-link").is_symlink() and (dest / "dir-link/inside").read_bytes() == b"inside"
    assert not (dest / "file-link").is_symlink() and (dest / "file-link").read_bytes() == b"overwritten"


def test_whiteout_through_symlink_deletes_nothing_outside(sandbox) -> None:
    dest, outside = sandbox
    os.symlink(outside, dest / "link")
    apply_layer(io.BytesIO(make_tar([(member("link/.wh.secret"), b"")])), dest)
    assert (outside / "secret").read_text() == "secret"


def test_overlay_xattrs_in_a_tar_are_ignored(sandbox) -> None:
    dest, _ = sandbox
    info = member("d/", tarfile.DIRTYPE, mode=0o755)
    info.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.user.ok": "1"}
    unpack_layer(io.BytesIO(make_tar([(info, None)])), dest)
    assert os.listxattr(dest / "d") == ["user.ok"]


def _good_tar() -> bytes:
    return make_tar([(member("a/", tarfile.DIRTYPE, mode=0o755), None),
                     (member("a/file"), os.urandom(100_000)),
                     (member("b"), b"b" * 5000)])


def _last_header(tar: bytes) -> int:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return t.getmembers()[-1].offset


@pytest.mark.parametrize("case", [
    "garbage", "empty", "truncated-gzip", "corrupt-gzip-crc", "truncated-zstd", "corrupt-zstd",
    "truncated-tar-in-content", "truncated-tar-in-header", "corrupt-header-mid-archive",
    "truncated-xz", "truncated-bzip2",
])
def test_broken_archives_raise_archive_error(tmp_path: Path, case: str) -> None:
    tar = _good_tar()
    gz = gzip.compress(tar, mtime=0)
    zst = zstandard.ZstdCompressor(write_checksum=True).compress(tar)
    blob = {
        "garbage": os.urandom(4096),
        "empty": b"",
        "truncated-gzip": gz[: len(gz) // 2],
        "corrupt-gzip-crc": gz[:-8] + bytes(4) + gz[-4:],
        "truncated-zstd": zst[: len(zst) - 20],
        "corrupt-zstd": zst[:100] + bytes(50) + zst[150:],
        "truncated-tar-in-content": tar[:2048],
        "truncated-tar-in-header": tar[:512 * 3 + 100],
        "corrupt-header-mid-archive": tar[:_last_header(tar)] + b"\xff" * 512 + tar[_last_header(tar) + 512 :],
        "truncated-xz": lzma.compress(tar)[:200],
        "truncated-bzip2": bz2.compress(tar)[:200],
    }[case]
    for extract in (unpack_layer, apply_layer):
        dest = tmp_path / f"dest-{extract.__name__}"
        dest.mkdir()
        with pytest.raises(ArchiveError):
            extract(io.BytesIO(blob), dest)
    with pytest.raises(ArchiveError):
        list(iter_layer_entries(io.BytesIO(blob)))


@pytest.mark.parametrize("compress", [
    lambda t: t, lambda t: gzip.compress(t, mtime=0), bz2.compress, lzma.compress,
    lambda t: zstandard.ZstdCompressor().compress(t),
])
def test_open_layer_stream_detects_every_format(compress) -> None:
    tar = _good_tar()
    assert open_layer_stream(io.BytesIO(compress(tar))).read() == tar


def test_tar_without_end_blocks_is_accepted(tmp_path: Path) -> None:
    tar = _good_tar()
    # Cut right after the last member's data: Go and GNU tar accept a missing end marker.
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        last = t.getmembers()[-1]
        end = last.offset_data + ((last.size + 511) // 512) * 512
    unpack_layer(io.BytesIO(tar[:end]), tmp_path)
    assert (tmp_path / "b").read_bytes() == b"b" * 5000
