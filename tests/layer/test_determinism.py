"""Same content -> same bytes: umask, creation order, inode numbers, mtimes above the epoch,
time zone and thread count must not show in the layer."""
from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from builder.layer import write_layer
from builder.layer.compress import ParallelGzipWriter, ZstdWriter

from .conftest import EPOCH, build_tree, layer_bytes, requires_root


@requires_root
@pytest.mark.parametrize("compression", ["gzip", "zstd", "uncompressed"])
def test_same_tree_built_two_ways_gives_identical_bytes(tmp_path: Path, compression: str) -> None:
    first = build_tree(tmp_path / "one", reverse=False, umask=0o022, now=EPOCH + 10)
    # Burn some inode numbers so the second tree's inodes differ.
    for i in range(50):
        (tmp_path / f"filler{i}").write_bytes(b"")
    second = build_tree(tmp_path / "two", reverse=True, umask=0o077, now=EPOCH + 99_999)
    assert os.stat(first / "bin/ping").st_ino != os.stat(second / "bin/ping").st_ino
    blob1, digests1 = layer_bytes(first, compression=compression, source_date_epoch=EPOCH)
    blob2, digests2 = layer_bytes(second, compression=compression, source_date_epoch=EPOCH)
    assert blob1 == blob2
    assert digests1 == digests2


@requires_root
def test_without_epoch_different_mtimes_give_different_bytes(tmp_path: Path) -> None:
    # The test above must be able to fail: mtimes do show when nothing clamps them.
    first = build_tree(tmp_path / "one", now=EPOCH + 10)
    second = build_tree(tmp_path / "two", now=EPOCH + 20)
    assert layer_bytes(first)[1].diff_id != layer_bytes(second)[1].diff_id


@requires_root
def test_time_zone_does_not_change_the_bytes(tmp_path: Path) -> None:
    tree = build_tree(tmp_path / "tree")
    script = (
        "import io, sys; from pathlib import Path; from builder.layer import write_layer;"
        "out = io.BytesIO(); print(write_layer(Path(sys.argv[1]), out, source_date_epoch=0).digest)"
    )
    digests = set()
    for tz in ("UTC", "Asia/Kolkata", "America/St_Johns"):
        result = subprocess.run(
            [sys.executable, "-c", script, str(tree)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "TZ": tz}, cwd=Path(__file__).resolve().parents[2],
        )
        digests.add(result.stdout.strip())
    assert len(digests) == 1


def _mixed_data(size: int) -> bytes:
    """Text-like, random and zero runs, so every compressor path is exercised."""
    rng = random.Random(1234)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    parts: list[bytes] = []
    total = 0
    while total < size:
        kind = rng.randrange(3)
        if kind == 0:
            piece = b" ".join(rng.choice(words) for _ in range(20_000))
        elif kind == 1:
            piece = rng.randbytes(300_000)
        else:
            piece = bytes(500_000)
        parts.append(piece)
        total += len(piece)
    return b"".join(parts)[:size]


@pytest.fixture(scope="module")
def mixed_data() -> bytes:
    return _mixed_data(24 << 20)


@pytest.mark.parametrize("writer", [ParallelGzipWriter, ZstdWriter])
def test_compressed_bytes_do_not_depend_on_threads_or_write_sizes(mixed_data: bytes, writer) -> None:
    outputs = []
    # The last cuts mix small pieces (gathered) with large ones (passed on as they are), as a
    # tar of small files and big ones does.
    for threads, write_sizes in ((1, [1 << 20]), (2, [65_537]), (4, [10_240]), (8, [3 << 20]),
                                 (2, [700, 300_000, 9, (1 << 20) + 3, 512, 262_144])):
        out = io.BytesIO()
        compressor = writer(out, threads=threads)
        offset, cut = 0, 0
        while offset < len(mixed_data):
            size = write_sizes[cut % len(write_sizes)]
            compressor.write(mixed_data[offset : offset + size])
            offset, cut = offset + size, cut + 1
        compressor.close()
        outputs.append(out.getvalue())
    assert all(output == outputs[0] for output in outputs[1:])
    assert len(outputs[0]) < len(mixed_data)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_write_layer_bytes_identical_for_1_2_4_8_threads(tmp_path: Path, mixed_data: bytes, compression: str) -> None:
    (tmp_path / "data.bin").write_bytes(mixed_data[: 12 << 20])
    (tmp_path / "small").write_bytes(b"small\n")
    os.utime(tmp_path / "data.bin", (0, 0))
    results = {threads: layer_bytes(tmp_path, compression=compression, threads=threads) for threads in (1, 2, 4, 8)}
    blobs = {blob for blob, _ in results.values()}
    digests = {digests for _, digests in results.values()}
    assert len(blobs) == 1 and len(digests) == 1


@pytest.mark.parametrize(("compression", "check"), [
    ("gzip", ["gzip", "-t"]),
    ("gzip", ["pigz", "-t"]),
    ("zstd", ["zstd", "-q", "-t"]),
])
def test_system_tools_accept_the_compressed_stream(tmp_path: Path, mixed_data: bytes, compression: str, check: list[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(mixed_data[: 5 << 20])
    blob_path = tmp_path / "layer.blob"
    with open(blob_path, "wb") as out:
        digests = write_layer(src, out, compression=compression, threads=4)
    subprocess.run([*check, str(blob_path)], check=True)
    decompress = ["gzip", "-dc"] if compression == "gzip" else ["zstd", "-dc"]
    tar = subprocess.run([*decompress, str(blob_path)], capture_output=True, check=True).stdout
    import hashlib
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == digests.diff_id
    listing = subprocess.run(["tar", "-tvf", "-"], input=tar, capture_output=True, check=True)
    assert b"data.bin" in listing.stdout


def test_corrupted_gzip_is_rejected_by_system_gzip(tmp_path: Path, mixed_data: bytes) -> None:
    # The previous test must be able to fail: a flipped byte makes gzip -t complain.
    out = io.BytesIO()
    writer = ParallelGzipWriter(out, threads=2)
    writer.write(mixed_data[: 3 << 20])
    writer.close()
    damaged = bytearray(out.getvalue())
    damaged[len(damaged) // 2] ^= 0xFF
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(damaged))
    assert subprocess.run(["gzip", "-t", str(path)], capture_output=True).returncode != 0
