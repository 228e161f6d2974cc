"""Issue 11, export speed: a layer made here is exported without hashing its tar a second time
when its snapshot dir provably has not changed since its diff_id was hashed (the dir's
signature, builder.layer.treesig); any change is still caught, and the bytes are the same."""
from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import tarfile
from pathlib import Path

import pytest
import zstandard
from storehelpers import build_image, make_tree, store_state

import builder.layer.compress as compress
import builder.layer.tarwrite as tarwrite
from builder.errors import ArchiveError, StoreError
from builder.image import oci
from builder.image.store import Store
from builder.layer.compress import NullSink
from builder.layer.tarwrite import stream_layer
from builder.layer.treesig import TreeChanged, TreeSignature, Trusted

BIG = 300 << 10  # read in several pieces (the tar writer reads files above 64 KiB in chunks)


@pytest.fixture
def tar_hashings(monkeypatch) -> list[int]:
    """One entry per tar stream the layer writer hashes (the diff_id of a tar it writes)."""
    made: list[int] = []

    class Counted(compress.HashingSink):
        def __init__(self, *args, **kwargs) -> None:
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tarwrite, "HashingSink", Counted)
    return made


@pytest.fixture
def compressions(monkeypatch) -> list[str]:
    """The compressors the layer writer opens, by kind."""
    opened: list[str] = []
    real = tarwrite.open_compressor

    def counted(kind, *args, **kwargs):
        opened.append(kind)
        return real(kind, *args, **kwargs)

    monkeypatch.setattr(tarwrite, "open_compressor", counted)
    return opened


def made_here(store: Store, tmp_path: Path, tag: str = "app:1"):
    """An image of one layer made here (a snapshot dir, no blob), as a build leaves it."""
    layer = make_tree(tmp_path / "layer", {"app/config.txt": "setting=1\n", "app/notes/readme": "hello\n"})
    (layer / "app/data.bin").write_bytes(os.urandom(BIG))
    os.symlink("config.txt", layer / "app/current")
    return build_image(store, [layer], tag, compression=None)


def layer_of(store: Store, record) -> tuple[str, Path]:
    diff_id = record.config["rootfs"]["diff_ids"][0]
    return diff_id, store.snapshot_dir(diff_id)


def shipped_layer(store: Store, record, compression: str) -> oci.Descriptor:
    return oci.manifest_layers(store.ship(record.manifest_digest, compression=compression).manifest)[0]


def decompressed_digest(store: Store, digest: str) -> str:
    with store.open_blob(digest) as raw:
        data = zstandard.ZstdDecompressor().stream_reader(raw).read()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_an_unchanged_snapshot_is_exported_without_hashing_its_tar(store, tmp_path, tar_hashings) -> None:
    record = made_here(store, tmp_path)
    diff_id, _ = layer_of(store, record)
    assert store.blobs.diff(diff_id).signature is not None, "the commit recorded the dir's signature"
    tar_hashings.clear()
    layer = shipped_layer(store, record, "zstd")
    assert tar_hashings == [], "the export trusted the unchanged dir"
    assert layer.media_type == oci.OCI_LAYER_ZSTD
    assert decompressed_digest(store, layer.digest) == diff_id


def test_content_changed_in_place_after_commit_is_refused_at_export(store, tmp_path) -> None:
    record = made_here(store, tmp_path)
    diff_id, snapshot = layer_of(store, record)
    target = snapshot / "app/config.txt"
    before = os.lstat(target)
    # Same size, mtime put back: only the ctime (which user space cannot set) shows the write.
    target.write_text("setting=2\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.lstat(target).st_size == before.st_size and os.lstat(target).st_mtime_ns == before.st_mtime_ns
    state = store_state(store)
    with pytest.raises(StoreError) as info:
        store.ship(record.manifest_digest, compression="zstd")
    assert f"layer {diff_id} now reads as" in info.value.message and "changed in the store" in info.value.message
    assert store_state(store) == state, "nothing was published"
    assert store.blobs.variant(diff_id, "zstd", 3) is None
    assert list(store.tmp_dir.iterdir()) == []
    assert any(diff_id in problem for problem in store.fsck())


def test_a_big_file_written_while_it_is_read_is_caught(tmp_path) -> None:
    """The window between the signature's fstat and the last read of a file read in pieces."""
    layer = make_tree(tmp_path / "layer", {})
    big = layer / "big.bin"
    big.write_bytes(b"a" * BIG)
    signature = TreeSignature(None)
    diff_id, _ = stream_layer(layer, NullSink(), compression="uncompressed", signature=signature)
    trusted = Trusted(diff_id, signature.value())

    class Meddler:
        """Rewrites the file (same size, same mtime) as its first bytes go out."""

        def __init__(self) -> None:
            self.writes = 0

        def write(self, data) -> int:
            self.writes += 1
            if self.writes == 2:  # the header went first; now its content
                st = os.lstat(big)
                with open(big, "r+b") as f:
                    f.write(b"b" * 10)
                os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
            return len(data)

    with pytest.raises(ArchiveError, match="changed while the layer was being written"):
        stream_layer(layer, Meddler(), compression="uncompressed", trusted=trusted)


def test_a_changed_dir_is_given_up_on_early(tmp_path) -> None:
    """An export stops writing an unhashed tar at the first checkpoint of the signature that
    differs (here: every file was linked and unlinked, as a rootfs export does), not at the end."""
    layer = make_tree(tmp_path / "layer", {f"d/f{i:04}": f"{i}\n" for i in range(1500)})
    signature = TreeSignature(None)
    diff_id, size = stream_layer(layer, NullSink(), compression="uncompressed", signature=signature)
    for path in sorted((layer / "d").iterdir()):
        os.link(path, tmp_path / "extra-link")  # the file's ctime moves, its content does not
        os.unlink(tmp_path / "extra-link")
    written = compress.CountingSink(NullSink())
    with pytest.raises(TreeChanged):
        stream_layer(layer, written, compression="uncompressed", trusted=Trusted(diff_id, signature.value()))
    assert 0 < written.size < size // 4
    again = TreeSignature(None)
    assert stream_layer(layer, NullSink(), compression="uncompressed", signature=again) == (diff_id, size)
    assert again.value() != signature.value()


def test_a_harmless_change_is_hashed_once_then_trusted_again(store, tmp_path, tar_hashings) -> None:
    record = made_here(store, tmp_path)
    diff_id, snapshot = layer_of(store, record)
    recorded = store.blobs.diff(diff_id).signature
    os.chmod(snapshot / "app/config.txt", 0o644)  # the same mode: the ctime moves, the tar does not
    tar_hashings.clear()
    gzip_layer = shipped_layer(store, record, "gzip")
    assert tar_hashings == [1], "the signature no longer matched: the tar was hashed, and checked"
    assert store.blobs.diff(diff_id).signature not in (None, recorded), "the dir's new signature is kept"
    tar_hashings.clear()
    zstd_layer = shipped_layer(store, record, "zstd")
    assert tar_hashings == []
    assert decompressed_digest(store, zstd_layer.digest) == diff_id
    assert gzip_layer.media_type == oci.OCI_LAYER_GZIP and zstd_layer.media_type == oci.OCI_LAYER_ZSTD


def test_a_second_export_compresses_nothing(store, tmp_path, compressions) -> None:
    record = made_here(store, tmp_path)
    compressions.clear()  # the commit's uncompressed tar
    first = store.ship(record.manifest_digest, compression="zstd")
    assert compressions == ["zstd"]
    again = store.ship(record.manifest_digest, compression="zstd")
    assert compressions == ["zstd"], "the kept blob is shipped"
    assert again == first


def test_layers_made_before_signatures_are_hashed_then_trusted(store, tmp_path, tar_hashings) -> None:
    """A store of schema 4 (no signatures) is upgraded; its layers keep the hashing path until a
    hashed export gives them a signature."""
    record = made_here(store, tmp_path)
    diff_id, _ = layer_of(store, record)
    with sqlite3.connect(store.db_path) as db:  # the diffs table as schema 4 had it
        db.execute("ALTER TABLE diffs DROP COLUMN signature")
        db.execute("PRAGMA user_version=4")
    reopened = Store.open(store.root)
    assert reopened.blobs.diff(diff_id).signature is None
    tar_hashings.clear()
    shipped_layer(reopened, record, "zstd")
    assert tar_hashings == [1]
    tar_hashings.clear()
    shipped_layer(reopened, record, "gzip")
    assert tar_hashings == []


def reference_tar(root: Path, names: list[str]) -> bytes:
    """The layer as Python's tarfile writes it (PAX, numeric owners, whole-second mtimes)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tar.gettarinfo(str(root / name), arcname=name)
            info.uname = info.gname = ""
            info.mtime = int(info.mtime)
            if info.isreg():
                with open(root / name, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return out.getvalue()


def reference_zstd(data: bytes) -> bytes:
    """Level 3, checksum on, no content size, libzstd's multithreaded mode, in one write; the frame
    flushed, then the writer closed, which adds an empty frame (13 bytes zstd layer blobs have
    always ended with)."""
    out = io.BytesIO()
    writer = zstandard.ZstdCompressor(level=3, threads=1, write_checksum=True, write_content_size=False,
                                      write_dict_id=False).stream_writer(out, closefd=False)
    writer.write(data)
    writer.flush(zstandard.FLUSH_FRAME)
    writer.close()
    return out.getvalue()


@pytest.mark.parametrize("trusted", [True, False])
def test_exported_bytes_are_the_layer_tar_in_plain_zstd(store, tmp_path, tar_hashings, trusted: bool) -> None:
    """Whether the tar is hashed or trusted, the blob is the tar tarfile writes, compressed by
    libzstd with the store's settings: the bytes a layer had before exports trusted dirs."""
    layer = make_tree(tmp_path / "layer", {"app/a.txt": "a" * 1000})
    (layer / "app/sub").mkdir()
    (layer / "app/sub/big.bin").write_bytes(os.urandom(3 << 20))
    os.symlink("a.txt", layer / "app/link")
    record = build_image(store, [layer], "app:1", compression=None)
    diff_id, snapshot = layer_of(store, record)
    expected_tar = reference_tar(snapshot, ["app", "app/a.txt", "app/link", "app/sub", "app/sub/big.bin"])
    assert diff_id == "sha256:" + hashlib.sha256(expected_tar).hexdigest()
    if not trusted:
        store.blobs.index.db().execute("UPDATE diffs SET signature=NULL")
    tar_hashings.clear()
    layer_blob = shipped_layer(store, record, "zstd")
    assert tar_hashings == ([] if trusted else [1])
    expected = reference_zstd(expected_tar)
    assert layer_blob.digest == "sha256:" + hashlib.sha256(expected).hexdigest()
    assert store.read_blob(layer_blob.digest) == expected
