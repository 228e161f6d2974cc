"""write_layer: the tar entries, their metadata and order, digests and media types."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from builder.errors import ArchiveError
from builder.layer import (
    LayerDigests,
    docker_media_type,
    iter_layer_entries,
    open_layer_stream,
    write_layer,
)

from .conftest import CAPABILITY, EPOCH, LONG_DIR, LONG_FILE, OLD_MTIME, entries_of, layer_bytes, requires_root

pytestmark = requires_root

NON_UTF8_NAME = b"home/user/caf\xe9".decode("utf-8", "surrogateescape")

EXPECTED_ORDER = [
    "a", "a/data",
    "bin", "bin/abs", "bin/ping", "bin/sh",
    "dev", "dev/loop0", "dev/null",
    "empty",
    "etc", "etc/.wh.removed", "etc/passwd",
    "home", "home/user", "home/user/big-uid", "home/user/café", NON_UTF8_NAME,
    "home/user/file with spaces.txt", "home/user/new\nline",
    "long", LONG_DIR, LONG_FILE,
    "run", "run/fifo",
    "srv",
    "var", "var/cache", "var/cache/.wh..wh..opq", "var/cache/keep",
    "z", "z/data-link",
]


def _by_name(blob: bytes) -> dict:
    return {entry.name: entry for entry in entries_of(blob)}


def _raw_tar(blob: bytes) -> bytes:
    return open_layer_stream(io.BytesIO(blob)).read()


def test_entries_come_in_tree_order_with_parents_first(tree: Path) -> None:
    blob, _ = layer_bytes(tree, source_date_epoch=EPOCH)
    names = [entry.name for entry in entries_of(blob)]
    assert names == EXPECTED_ORDER
    for index, name in enumerate(names):  # every parent precedes its children
        parent = name.rpartition("/")[0]
        if parent:
            assert parent in names[:index]


def test_entry_types_modes_owners_links(tree: Path) -> None:
    entries = _by_name(layer_bytes(tree, source_date_epoch=EPOCH)[0])
    assert entries["bin"].type == "dir" and entries["bin"].mode == 0o755
    assert entries["empty"].type == "dir" and entries["empty"].mode == 0o1777
    assert entries["srv"].mode == 0o2775 and entries["srv"].gid == 50
    ping = entries["bin/ping"]
    assert (ping.type, ping.mode, ping.size) == ("file", 0o4755, len(b"ping binary\n"))
    assert ping.sha256 == "sha256:" + hashlib.sha256(b"ping binary\n").hexdigest()
    assert (entries["bin/sh"].type, entries["bin/sh"].linkname) == ("symlink", "busybox")
    assert entries["bin/abs"].linkname == "/etc/passwd"
    data = entries["a/data"]
    assert (data.type, data.uid, data.gid, data.mode) == ("file", 12, 34, 0o640)
    link = entries["z/data-link"]
    assert (link.type, link.linkname, link.size) == ("hardlink", "a/data", 0)
    assert (entries["run/fifo"].type, entries["run/fifo"].mode) == ("fifo", 0o600)
    null = entries["dev/null"]
    assert (null.type, null.devmajor, null.devminor, null.mode) == ("char", 1, 3, 0o666)
    loop = entries["dev/loop0"]
    assert (loop.type, loop.devmajor, loop.devminor, loop.gid) == ("block", 7, 0, 6)
    user = entries["home/user"]
    assert (user.uid, user.gid, user.mode) == (1000, 1000, 0o700)
    big = entries["home/user/big-uid"]
    assert (big.uid, big.gid) == (3_000_000, 3_000_001)  # beyond ustar: PAX uid/gid
    assert entries[NON_UTF8_NAME].sha256 == "sha256:" + hashlib.sha256(b"latin-1 name\n").hexdigest()
    assert entries["home/user/new\nline"].size == len(b"newline\n")
    assert len(LONG_FILE) == 200 and entries[LONG_FILE].size == len(b"long name\n")


def test_whiteouts_and_opaque_markers(tree: Path) -> None:
    entries = _by_name(layer_bytes(tree, source_date_epoch=EPOCH)[0])
    assert "etc/removed" not in entries
    for name in ("etc/.wh.removed", "var/cache/.wh..wh..opq"):
        marker = entries[name]
        assert (marker.type, marker.size, marker.uid, marker.gid, marker.mtime) == ("file", 0, 0, 0, EPOCH)
        assert marker.xattrs == {}
    assert entries["var/cache"].xattrs == {"user.cache": b"1"}  # overlay xattr dropped
    # Without an epoch the synthetic entries get mtime 0.
    entries = _by_name(layer_bytes(tree)[0])
    assert entries["etc/.wh.removed"].mtime == 0
    assert entries["var/cache/.wh..wh..opq"].mtime == 0


def test_xattrs_sorted_binary_and_overlay_ones_never_copied(tree: Path) -> None:
    blob, _ = layer_bytes(tree, source_date_epoch=EPOCH)
    entries = _by_name(blob)
    ping = entries["bin/ping"]
    assert ping.xattrs == {"security.capability": CAPABILITY, "user.note": b"hello"}
    assert list(ping.xattrs) == sorted(ping.xattrs)
    assert entries["etc/passwd"].xattrs == {}
    raw = _raw_tar(blob)
    assert b"trusted.overlay" not in raw
    assert b"SCHILY.xattr.security.capability=" + CAPABILITY + b"\n" in raw


def test_mtimes_clamped_to_epoch_and_older_kept(tree: Path) -> None:
    entries = _by_name(layer_bytes(tree, source_date_epoch=EPOCH)[0])
    assert entries["a/data"].mtime == OLD_MTIME
    assert entries["bin/ping"].mtime == EPOCH
    assert entries["bin"].mtime == EPOCH
    assert entries["bin/sh"].mtime == EPOCH
    unclamped = _by_name(layer_bytes(tree)[0])
    assert unclamped["bin/ping"].mtime == EPOCH + 1000
    assert unclamped["a/data"].mtime == OLD_MTIME


def test_subsecond_mtimes_are_truncated(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    os.utime(tmp_path / "f", ns=(1_600_000_000_999_999_999, 1_600_000_000_999_999_999))
    entries = _by_name(layer_bytes(tmp_path)[0])
    assert entries["f"].mtime == 1_600_000_000


def test_header_fields_numeric_owner_no_atime_ctime(tree: Path) -> None:
    raw = _raw_tar(layer_bytes(tree, source_date_epoch=EPOCH)[0])
    with tarfile.open(fileobj=io.BytesIO(raw), encoding="utf-8", errors="surrogateescape") as tar:
        members = tar.getmembers()
    assert all(m.uname == "" and m.gname == "" for m in members)
    for m in members:
        assert not {"atime", "ctime", "mtime"} & set(m.pax_headers)
    assert b"atime=" not in raw and b"ctime=" not in raw
    assert b"hdrcharset" not in raw  # raw bytes, like Go's archive/tar
    assert b"./" not in raw[:100]  # no leading ./ in the first header name
    long_member = next(m for m in members if m.name == LONG_FILE)
    assert long_member.pax_headers["path"] == LONG_FILE
    nonutf8 = next(m for m in members if m.name == NON_UTF8_NAME)
    assert b"path=home/user/caf\xe9\n" in raw
    assert nonutf8.pax_headers["path"].encode("utf-8", "surrogateescape") == b"home/user/caf\xe9"


def test_system_tar_lists_it_with_directory_slashes(tree: Path, tmp_path: Path) -> None:
    blob, _ = layer_bytes(tree, compression="uncompressed", source_date_epoch=EPOCH)
    path = tmp_path / "layer.tar"
    path.write_bytes(blob)
    result = subprocess.run(["tar", "-tvf", str(path)], capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    names = subprocess.run(["tar", "--quoting-style=literal", "-tf", str(path)], capture_output=True, check=True).stdout.split(b"\n")
    assert b"bin/" in names and b"var/cache/" in names and b"bin/ping" in names
    assert b"home/user/caf\xe9" in names
    assert not any(name.startswith((b"/", b"./")) for name in names)


@pytest.mark.parametrize(
    ("compression", "media_type", "docker_type"),
    [
        ("gzip", "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.zstd"),
        ("uncompressed", "application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar"),
    ],
)
def test_digests_and_media_types(tree: Path, compression: str, media_type: str, docker_type: str) -> None:
    blob, digests = layer_bytes(tree, compression=compression, source_date_epoch=EPOCH)
    assert isinstance(digests, LayerDigests)
    assert digests.media_type == media_type
    assert docker_media_type(media_type) == docker_type
    assert digests.size == len(blob)
    assert digests.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    if compression == "gzip":
        tar = gzip.decompress(blob)
    elif compression == "zstd":
        tar = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    else:
        tar = blob
        assert digests.diff_id == digests.digest
    assert digests.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert len(tar) % 512 == 0


def test_gzip_header_has_no_name_and_zero_mtime(tree: Path) -> None:
    blob, _ = layer_bytes(tree, compression="gzip")
    assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert layer_bytes(tree, compression="gzip", level=9)[0][8] == 2  # XFL: max compression
    assert layer_bytes(tree, compression="gzip", level=1)[0][8] == 4


def test_zstd_frame_has_checksum_and_no_content_size(tree: Path) -> None:
    blob, _ = layer_bytes(tree, compression="zstd")
    params = zstandard.get_frame_parameters(blob)
    assert params.has_checksum
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert params.dict_id == 0


def test_levels_change_output(tree: Path) -> None:
    (tree / "text").write_bytes(b"".join(b"line %d of some text\n" % i for i in range(50_000)))
    assert layer_bytes(tree, level=1)[0] != layer_bytes(tree, level=9)[0]
    assert layer_bytes(tree)[0] == layer_bytes(tree, level=6)[0]
    assert layer_bytes(tree, compression="zstd")[0] == layer_bytes(tree, compression="zstd", level=3)[0]


def test_empty_dir_gives_a_valid_empty_tar(tmp_path: Path) -> None:
    blob, digests = layer_bytes(tmp_path)
    assert entries_of(blob) == []
    assert len(gzip.decompress(blob)) == 10240


def test_reserved_whiteout_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / ".wh.sneaky").write_bytes(b"")
    with pytest.raises(ArchiveError, match="reserved for whiteouts"):
        write_layer(tmp_path, io.BytesIO())


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_the_walk_leaves_no_file_open_when_it_ends_or_fails(tree: Path, tmp_path: Path) -> None:
    """The writer holds each directory and file open while it writes them (it works relative
    to them): all closed again after a layer, and after a walk that fails deep in the tree."""
    before = open_fds()
    write_layer(tree, io.BytesIO())
    assert open_fds() == before
    deep = tmp_path / "deep"
    (deep / "a/b/c").mkdir(parents=True)
    (deep / "a/b/file").write_bytes(b"x" * 100_000)
    (deep / "a/b/c/.wh.sneaky").write_bytes(b"")
    with pytest.raises(ArchiveError, match="reserved for whiteouts"):
        write_layer(deep, io.BytesIO())
    assert open_fds() == before


def test_a_file_that_changed_size_after_the_walk_saw_it_is_an_error(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "grows").write_bytes(b"x" * 10)
    real_open = os.open

    def open_after_growing(path, flags, mode=0o777, *, dir_fd=None):
        if path in (b"grows", "grows"):
            (tmp_path / "grows").write_bytes(b"x" * 20)  # after the walk's lstat, before the open
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", open_after_growing)
    before = open_fds()
    with pytest.raises(ArchiveError, match="changed while the layer was being written"):
        write_layer(tmp_path, io.BytesIO())
    assert open_fds() == before


def test_unknown_compression_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="brotli"):
        write_layer(tmp_path, io.BytesIO(), compression="brotli")


def test_missing_source_dir_is_an_archive_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="cannot write layer"):
        write_layer(tmp_path / "nope", io.BytesIO())


def test_iter_layer_entries_reads_every_compression(tree: Path) -> None:
    names = {c: [e.name for e in iter_layer_entries(io.BytesIO(layer_bytes(tree, compression=c)[0]))]
             for c in ("gzip", "zstd", "uncompressed")}
    assert names["gzip"] == names["zstd"] == names["uncompressed"] == EXPECTED_ORDER


class _FullDisk(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("compression", ["gzip", "zstd", "uncompressed"])
def test_output_errors_reach_the_caller_unchanged(tree: Path, compression: str) -> None:
    # The store turns its own disk-full into a StoreError; it must not look like a bad archive.
    with pytest.raises(OSError) as caught:
        write_layer(tree, _FullDisk(), compression=compression)
    assert not isinstance(caught.value, ArchiveError)
    assert caught.value.errno == 28
