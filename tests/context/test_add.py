"""ADD: local archives extracted safely (any compression, detected by bytes), URLs downloaded."""
from __future__ import annotations

import bz2
import gzip
import hashlib
import http.server
import io
import lzma
import os
import tarfile
import threading
from email.utils import formatdate
from pathlib import Path

import pytest
import zstandard
from ctxhelpers import tree_listing  # type: ignore[import-not-found]

from builder.context.dockerignore import IgnoreMatcher
from builder.context.tree import BuildContext
from builder.errors import ArchiveError, ContextError, Pos
from builder.solve.archive import is_tar_archive
from builder.solve.copy import stage_copy

POS = Pos("Buildfile", 4, 1)


def tar_bytes(entries) -> bytes:
    """entries: (name, kind, data/linkname, uid, gid, mode)"""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload, uid, gid, mode in entries:
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.mode, info.mtime = uid, gid, mode, 1_500_000_000
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            tar.addfile(info)
    return buffer.getvalue()


GOOD = [
    ("./pkg", "dir", None, 10, 20, 0o750),
    ("./pkg/bin/tool", "file", b"#!/bin/sh\n", 10, 20, 0o755),
    ("./pkg/readme", "file", b"hello", 0, 0, 0o644),
    ("./pkg/alias", "sym", "bin/tool", 10, 20, 0o777),
    ("./pkg/hard", "hard", "pkg/readme", 0, 0, 0o644),
]

COMPRESSORS = {
    "plain": lambda data: data,
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}


@pytest.fixture
def ctx_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    root.mkdir()
    return root


def add(root: Path, sources, dest, staging, **kw):
    options = dict(
        workdir="/",
        staging_dir=staging,
        dest_is_dir=lambda path: False,
        chown=None,
        chmod=None,
        pos=POS,
        is_add=True,
    )
    options.update(kw)
    return stage_copy(BuildContext(root, IgnoreMatcher.empty()), sources, dest, **options)


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_archives_are_extracted_whatever_the_name(kind, ctx_dir, staging):
    (ctx_dir / "bundle.dat").write_bytes(COMPRESSORS[kind](tar_bytes(GOOD)))  # no telling extension
    assert is_tar_archive(ctx_dir / "bundle.dat")
    add(ctx_dir, ["bundle.dat"], "/opt", staging)
    listing = tree_listing(staging)
    assert listing["/opt"] == ("dir", 0o755, 0, 0, None)
    assert listing["/opt/pkg"] == ("dir", 0o750, 10, 20, None)
    assert listing["/opt/pkg/bin/tool"] == ("file", 0o755, 10, 20, b"#!/bin/sh\n")
    assert listing["/opt/pkg/alias"][0::4] == ("link", "bin/tool")
    assert os.lstat(staging / "opt/pkg/hard").st_ino == os.lstat(staging / "opt/pkg/readme").st_ino
    assert os.lstat(staging / "opt/pkg/readme").st_mtime == 1_500_000_000
    assert os.lstat(staging / "opt/pkg").st_mtime == 1_500_000_000  # set after its children


def test_chown_overrides_archive_owners(ctx_dir, staging):
    (ctx_dir / "a.tar.gz").write_bytes(gzip.compress(tar_bytes(GOOD)))
    add(ctx_dir, ["a.tar.gz"], "/opt/", staging, chown=(7, 8))
    owners = {v[2:4] for v in tree_listing(staging).values()}
    assert owners == {(7, 8)}


def test_compressed_non_tar_is_copied_as_is(ctx_dir, staging):
    payload = gzip.compress(b"just text, not a tar" * 10)
    (ctx_dir / "notes.gz").write_bytes(payload)
    (ctx_dir / "fake.tar").write_bytes(b"not really a tar" * 100)
    assert not is_tar_archive(ctx_dir / "notes.gz")
    add(ctx_dir, ["notes.gz", "fake.tar"], "/d/", staging)
    assert (staging / "d/notes.gz").read_bytes() == payload
    assert (staging / "d/fake.tar").read_bytes() == b"not really a tar" * 100


def test_copy_never_extracts(ctx_dir, staging):
    data = tar_bytes(GOOD)
    (ctx_dir / "a.tar").write_bytes(data)
    add(ctx_dir, ["a.tar"], "/x/", staging, is_add=False)
    assert (staging / "x/a.tar").read_bytes() == data


@pytest.mark.parametrize(
    "entries,words",
    [
        ([("../evil", "file", b"x", 0, 0, 0o644)], "climbs out"),
        ([("ok/../../evil", "file", b"x", 0, 0, 0o644)], "climbs out"),
        ([("/etc/evil", "file", b"x", 0, 0, 0o644)], "absolute name"),
        (
            [("link", "sym", "/tmp", 0, 0, 0o777), ("link/evil", "file", b"x", 0, 0, 0o644)],
            "symlink",
        ),
        (
            [("up", "sym", "../..", 0, 0, 0o777), ("up/evil", "file", b"x", 0, 0, 0o644)],
            "symlink",
        ),
        ([("h", "hard", "../../etc/passwd", 0, 0, 0o644)], "climbs out"),
        ([("h", "hard", "never-seen", 0, 0, 0o644)], "not an earlier entry"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "through-abs-symlink", "through-rel-symlink", "hardlink-out", "hardlink-unknown"],
)
def test_hostile_archives_are_refused(entries, words, ctx_dir, staging, tmp_path):
    (ctx_dir / "evil.tar").write_bytes(tar_bytes(entries))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ArchiveError) as info:
        add(ctx_dir, ["evil.tar"], "/opt/", staging)
    assert words in info.value.message
    assert info.value.pos == POS
    assert "evil.tar" in info.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()
    found = [p for p in staging.rglob("evil")]
    assert found == []


def test_corrupt_archive_is_an_archive_error(ctx_dir, staging):
    # the first header decodes (so it is an archive), then the stream stops mid-file
    big = [("big.bin", "file", os.urandom(200_000), 0, 0, 0o644)]
    data = gzip.compress(tar_bytes(big))
    (ctx_dir / "cut.tgz").write_bytes(data[: len(data) // 2])
    assert is_tar_archive(ctx_dir / "cut.tgz")
    with pytest.raises(ArchiveError) as info:
        add(ctx_dir, ["cut.tgz"], "/opt/", staging)
    assert "cut.tgz" in info.value.message


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, tuple[bytes, str | None]] = {}

    def do_GET(self):  # noqa: N802 - the http.server API
        if self.path not in self.files:
            self.send_error(404, "Not Found")
            return
        body, modified = self.files[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if modified:
            self.send_header("Last-Modified", modified)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_base():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_url_download(http_base, ctx_dir, staging):
    body = tar_bytes(GOOD)  # a tar from a URL is *not* extracted
    _Handler.files = {"/files/tool.tar": (body, formatdate(1_400_000_000, usegmt=True))}
    add(ctx_dir, [f"{http_base}/files/tool.tar"], "/dl/", staging)
    listing = tree_listing(staging)
    assert listing["/dl/tool.tar"] == ("file", 0o600, 0, 0, body)
    assert os.lstat(staging / "dl/tool.tar").st_mtime == 1_400_000_000


def test_url_to_file_path_with_checksum_and_chown(http_base, ctx_dir, staging):
    body = b"payload"
    _Handler.files = {"/p": (body, None)}
    good = "sha256:" + hashlib.sha256(body).hexdigest()
    add(ctx_dir, [f"{http_base}/p"], "/opt/payload.bin", staging, checksum=good, chown=(3, 4), source_date_epoch=99)
    listing = tree_listing(staging)
    assert listing["/opt/payload.bin"] == ("file", 0o600, 3, 4, body)
    assert os.lstat(staging / "opt/payload.bin").st_mtime == 99


def test_url_checksum_mismatch(http_base, ctx_dir, staging):
    _Handler.files = {"/p": (b"payload", None)}
    with pytest.raises(ContextError) as info:
        add(ctx_dir, [f"{http_base}/p"], "/x", staging, checksum="sha256:" + "0" * 64)
    assert "checksum mismatch" in info.value.message
    assert list(staging.iterdir()) == []


def test_url_not_found(http_base, ctx_dir, staging):
    _Handler.files = {}
    with pytest.raises(ContextError) as info:
        add(ctx_dir, [f"{http_base}/missing.txt"], "/x", staging)
    assert "HTTP 404" in info.value.message
    assert info.value.pos == POS


def test_checksum_needs_a_url(ctx_dir, staging):
    (ctx_dir / "f").write_text("x")
    with pytest.raises(ContextError):
        add(ctx_dir, ["f"], "/x", staging, checksum="sha256:" + "0" * 64)


def test_git_sources_are_refused_clearly(ctx_dir, staging):
    with pytest.raises(ContextError) as info:
        add(ctx_dir, ["https://example.invalid/repo.git"], "/src", staging)
    assert "git" in info.value.message
