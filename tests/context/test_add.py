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


def _outside_snapshot(tmp_path: Path) -> list[str]:
    """Everything under tmp_path but the staging dir: what an extraction must never change."""
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "staging" not in p.parts)


F = 0o644
# Docker extracts an ADD archive chrooted into the destination: each entry lands where that
# gives (checked with dockerd 20.10 + BuildKit, `ADD x.tar /dest/`), never outside it.
INSIDE = [
    ([("../evil", "file", b"x", 0, 0, F)], {"/opt/evil": b"x"}),
    ([("ok/../../evil", "file", b"x", 0, 0, F)], {"/opt/evil": b"x"}),
    ([("/etc/evil", "file", b"x", 0, 0, F)], {"/opt/etc/evil": b"x"}),
    ([("up", "sym", "../../../..", 0, 0, 0o777), ("up/evil", "file", b"x", 0, 0, F)], {"/opt/evil": b"x"}),
    ([("abs", "sym", "/", 0, 0, 0o777), ("abs/etc/evil", "file", b"x", 0, 0, F)], {"/opt/etc/evil": b"x"}),
    ([("dir", "sym", "..", 0, 0, 0o777), ("dir/etc/f", "file", b"f", 0, 0, F)], {"/opt/etc/f": b"f"}),
    ([("c/d", "dir", None, 0, 0, 0o755), ("a", "sym", "b", 0, 0, 0o777), ("b", "sym", "c/d", 0, 0, 0o777),
      ("a/f", "file", b"f", 0, 0, F)], {"/opt/c/d/f": b"f"}),
    ([("", "file", b"no name", 0, 0, F), (".", "file", b"dot", 0, 0, F), ("./", "dir", None, 0, 0, 0o700),
      ("ok", "file", b"ok", 0, 0, F)], {"/opt/ok": b"ok"}),
    ([("real", "file", b"r", 0, 0, F), ("here", "sym", ".", 0, 0, 0o777), ("h", "hard", "here/real", 0, 0, F)],
     {"/opt/real": b"r", "/opt/h": b"r"}),
    ([("d/f", "file", b"f", 0, 0, F), ("d", "sym", "elsewhere", 0, 0, 0o777)], {}),
]


@pytest.mark.parametrize("entries,files", INSIDE, ids=[
    "dotdot", "nested-dotdot", "absolute-name", "through-dotdot-link", "through-root-link",
    "link-to-parent", "link-chain", "empty-and-dot-names-skipped", "hardlink-through-link",
    "link-replaces-dir",
])
def test_archive_paths_resolve_inside_the_destination(entries, files, ctx_dir, staging, tmp_path):
    (ctx_dir / "evil.tar").write_bytes(tar_bytes(entries))
    before = _outside_snapshot(tmp_path)
    add(ctx_dir, ["evil.tar"], "/opt/", staging)
    listing = tree_listing(staging)
    assert all(path == "/opt" or path.startswith("/opt/") for path in listing)
    assert {path: entry[4] for path, entry in listing.items() if entry[0] == "file"} == files
    assert _outside_snapshot(tmp_path) == before
    assert not Path("/tmp/evil").exists() and not Path("/opt/etc/evil").exists()


def test_archive_follows_the_images_links_below_the_destination(ctx_dir, staging):
    """ADD to / over an image where /lib -> usr/lib: Docker writes lib/x.so to /usr/lib/x.so
    (an absolute /lib2 -> /usr/lib too) instead of shadowing the image's link with a dir."""
    (ctx_dir / "libs.tar").write_bytes(tar_bytes([
        ("lib/x.so", "file", b"x", 0, 0, F), ("lib2/y.so", "file", b"y", 0, 0, F), ("lib/sub/z", "file", b"z", 0, 0, F),
    ]))
    image = {"/lib": ("link", "usr/lib"), "/lib2": ("link", "/usr/lib"), "/usr": ("dir", None), "/usr/lib": ("dir", None)}
    add(ctx_dir, ["libs.tar"], "/", staging, dest_is_dir=lambda path: path in ("/", "/usr", "/usr/lib"),
        image_node=image.get)
    listing = tree_listing(staging)
    assert {path for path, entry in listing.items() if entry[0] == "file"} == {
        "/usr/lib/x.so", "/usr/lib/y.so", "/usr/lib/sub/z"}
    assert "/lib" not in listing and "/lib2" not in listing


@pytest.mark.parametrize(
    "entries,words",
    [
        ([("link", "sym", "VICTIM", 0, 0, 0o777), ("link/evil", "file", b"x", 0, 0, F)], "does not exist"),
        ([("link", "sym", "/tmp", 0, 0, 0o777), ("link/evil", "file", b"x", 0, 0, F)], "does not exist"),
        ([("loop", "sym", "loop", 0, 0, 0o777), ("loop/evil", "file", b"x", 0, 0, F)], "too many levels"),
        ([("h", "hard", "../../etc/passwd", 0, 0, F)], "not an earlier entry"),
        ([("h", "hard", "never-seen", 0, 0, F)], "not an earlier entry"),
        ([("f", "file", b"x", 0, 0, F), ("f/evil", "file", b"x", 0, 0, F)], "to be a directory"),
    ],
    ids=["through-link-to-host-dir", "through-link-to-missing-dir", "link-loop", "hardlink-out",
         "hardlink-unknown", "file-as-dir"],
)
def test_hostile_archives_are_refused(entries, words, ctx_dir, staging, tmp_path):
    """What Docker refuses too, refused, and nothing is written outside the destination: a link to
    a host dir is resolved inside the destination, where that dir does not exist."""
    victim = tmp_path / "victim"
    victim.mkdir()
    entries = [(name, kind, str(victim) if payload == "VICTIM" else payload, *rest)
               for name, kind, payload, *rest in entries]
    (ctx_dir / "evil.tar").write_bytes(tar_bytes(entries))
    before = _outside_snapshot(tmp_path)
    with pytest.raises(ArchiveError) as info:
        add(ctx_dir, ["evil.tar"], "/opt/", staging)
    assert words in info.value.message
    assert info.value.pos == POS
    assert "evil.tar" in info.value.message
    assert _outside_snapshot(tmp_path) == before
    assert list(victim.iterdir()) == [] and not Path("/tmp/evil").exists()
    assert [p for p in staging.rglob("evil")] == []


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
