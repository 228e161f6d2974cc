"""Blob writes: content addressing, atomicity, crash safety."""
import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from builder.errors import StoreError
from builder.image import oci
from builder.image.blobfiles import DigestMismatch
from builder.image.store import Store

REPO = Path(__file__).resolve().parents[2]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_put_blob_from_bytes_stream_and_iterable(store):
    data = b"hello world\n" * 1000
    assert store.put_blob(data) == (sha(data), len(data))
    assert store.put_blob(io.BytesIO(data)) == (sha(data), len(data))
    assert store.put_blob(iter([data[:5], data[5:]])) == (sha(data), len(data))
    assert store.has_blob(sha(data))
    assert store.read_blob(sha(data)) == data
    path = store.blob_path(sha(data))
    assert path == store.root / "blobs" / "sha256" / sha(data)[7:]
    with store.open_blob(sha(data)) as f:
        assert f.read() == data
    assert [p.name for p in store.tmp_dir.iterdir()] == []


def test_put_json_is_canonical(store):
    digest, size = store.put_json({"b": [1, 2], "a": "é"})
    assert store.read_blob(digest) == '{"a":"é","b":[1,2]}'.encode()
    assert store.read_json(digest) == {"a": "é", "b": [1, 2]}
    assert oci.canonical_json({"b": 1, "a": {"d": None, "c": True}}) == b'{"a":{"c":true,"d":null},"b":1}'


def test_expected_digest_mismatch_leaves_nothing(store):
    with pytest.raises(DigestMismatch) as info:
        store.put_blob(b"real", expected_digest=sha(b"claimed"))
    assert "expected " + sha(b"claimed") in info.value.message
    assert not store.has_blob(sha(b"real")) and not store.has_blob(sha(b"claimed"))
    assert list(store.tmp_dir.iterdir()) == []
    assert list(store.blobs_dir.iterdir()) == []


def test_writer_error_midway_deletes_temp_file(store):
    with pytest.raises(RuntimeError):
        with store.blob_writer() as writer:
            writer.write(b"partial")
            assert writer.temp_path.exists()
            raise RuntimeError("source failed")
    assert list(store.tmp_dir.iterdir()) == []
    assert list(store.blobs_dir.iterdir()) == []


def test_writer_digest_after_commit_and_dedupe(store):
    with store.blob_writer() as writer:
        writer.write(b"abc")
        assert writer.digest is None
    assert writer.digest == sha(b"abc") and writer.size == 3
    with store.blob_writer(expected_digest=sha(b"abc")) as again:
        again.write(b"abc")
    assert again.digest == sha(b"abc")
    assert [p.name for p in store.blobs_dir.iterdir()] == [sha(b"abc")[7:]]
    assert list(store.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 32, "../../etc/passwd", "sha256:" + "G" * 64])
def test_invalid_digests_refused(store, bad):
    with pytest.raises(StoreError):
        store.blob_path(bad)
    with pytest.raises(StoreError):
        store.has_blob(bad)


def test_missing_blob_is_store_error(store):
    with pytest.raises(StoreError) as info:
        store.read_blob(sha(b"nothing"))
    assert "missing" in info.value.message


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from builder.image.store import Store
    store = Store.open({root!r})
    store.put_blob(b"complete blob")
    store.cache_put("k", {{"v": 1}})
    with store.blob_writer() as w:
        for i in range(100000):
            w.write(b"x" * 65536)
            if i == 20:
                print("writing", flush=True)
            time.sleep(0.001)
""")


def test_sigkill_during_write_leaves_valid_store(store_root):
    Store.open(store_root)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER.format(repo=str(REPO), root=str(store_root))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store.open(store_root)
    assert store.fsck() == []
    assert [p.name for p in store.blobs_dir.iterdir()] == [sha(b"complete blob")[7:]]
    assert store.cache_get("k") == {"v": 1}
    leftovers = list(store.tmp_dir.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith("blob-")
    # The dead writer's temp file is removed by gc (its flock is gone); a live one would be kept.
    old = time.time() - 3600
    os.utime(leftovers[0], (old, old))
    result = store.gc(min_age=3600)
    assert result.removed_tmp == [leftovers[0].name]
    assert list(store.tmp_dir.iterdir()) == []
    assert store.has_blob(sha(b"complete blob"))  # young unreferenced blob survives min_age


def test_gc_keeps_temp_file_of_live_writer(store):
    with store.blob_writer() as writer:
        writer.write(b"in progress")
        old = time.time() - 3600
        os.utime(writer.temp_path, (old, old))
        assert store.gc(min_age=0).removed_tmp == []
        assert writer.temp_path.exists()
    assert store.has_blob(sha(b"in progress"))


def test_full_disk_is_a_store_error_and_leaves_no_blob(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        store = Store.open(mnt / "store")
        small, _ = store.put_blob(b"fits")
        with pytest.raises(StoreError) as info:
            store.put_blob(iter([b"z" * 65536] * 40))  # 2.5 MiB
        assert "disk is full" in info.value.hint
        assert [p.name for p in store.blobs_dir.iterdir()] == [small[7:]]
        assert list(store.tmp_dir.iterdir()) == []
        assert store.fsck() == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_a_large_blob_is_written_back_while_it_is_written(store, monkeypatch):
    """The disk gets a big blob's bytes as they come (so the fsync before publication has little
    left to wait for): every step of them, from the start, with nothing skipped."""
    from builder.image import blobfiles

    asked: list[tuple[int, int, bool]] = []
    real = blobfiles.start_writeback

    def recorded(fd: int, offset: int, length: int) -> bool:
        taken = real(fd, offset, length)
        asked.append((offset, length, taken))
        return taken

    monkeypatch.setattr(blobfiles, "start_writeback", recorded)
    data = os.urandom(1 << 20) * (2 * blobfiles.WRITEBACK_STEP // (1 << 20) + 3)
    with store.blob_writer() as writer:
        for start in range(0, len(data), 1 << 20):
            writer.write(data[start:start + (1 << 20)])
    assert writer.digest == sha(data) and store.read_blob(sha(data)) == data
    assert [(offset, length) for offset, length, _ in asked] == [
        (0, blobfiles.WRITEBACK_STEP), (blobfiles.WRITEBACK_STEP, blobfiles.WRITEBACK_STEP)]
    assert all(taken for _, _, taken in asked), "the kernel took every request"
    small = b"small" * 1000
    asked.clear()
    store.put_blob(small)
    assert asked == [], "a small blob is left to the fsync alone"


def test_early_writeback_is_only_a_hint(store, monkeypatch, tmp_path):
    """A libc without sync_file_range, or a kernel refusing it, changes nothing but the timing."""
    from builder.image import blobfiles

    monkeypatch.setattr(blobfiles, "_libc", object())  # no sync_file_range in it
    with open(tmp_path / "f", "wb") as f:
        f.write(b"x" * 4096)
        assert blobfiles.start_writeback(f.fileno(), 0, 4096) is False
    data = os.urandom(blobfiles.WRITEBACK_STEP + 1)
    assert store.put_blob(data) == (sha(data), len(data))
    assert store.read_blob(sha(data)) == data
