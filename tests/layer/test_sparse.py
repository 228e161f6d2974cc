"""Memory stays flat: a 1 GiB sparse file is streamed, never held in memory."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = r"""
import json, os, resource, sys, hashlib
from pathlib import Path
from builder.layer import write_layer

src = Path(sys.argv[1])
compression = sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open(os.devnull, "wb") as out:
    digests = write_layer(src, out, compression=compression, threads=2)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "after_kib": after, "diff_id": digests.diff_id, "size": digests.size}))
"""

GIB = 1 << 30


@pytest.mark.slow
# gzip of a full GiB takes long on a busy machine; 256 MiB held in memory would show just as well.
@pytest.mark.parametrize(("compression", "size"), [("uncompressed", GIB), ("gzip", GIB // 4)])
def test_one_gib_sparse_file_streams_in_constant_memory(tmp_path: Path, compression: str, size: int) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse.img", "wb") as f:
        f.truncate(size)
    (src / "after").write_bytes(b"x")
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(src), compression],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2],
    )
    report = json.loads(result.stdout)
    growth_mib = (report["after_kib"] - report["before_kib"]) / 1024
    assert growth_mib < 64, f"RSS grew by {growth_mib:.0f} MiB while writing a 1 GiB file"
    if compression == "uncompressed":
        assert report["size"] > size  # the whole file really went through
    else:
        assert report["size"] < 2 << 20  # zeros compress; the bytes were produced, not skipped


_UNPACK_SCRIPT = r"""
import json, os, resource, sys
from pathlib import Path
from builder.layer import unpack_layer

blob, dest = sys.argv[1], Path(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open(blob, "rb") as stream:
    unpack_layer(stream, dest)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "after_kib": after}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_unpacking_a_huge_run_of_zeros_stays_small_in_memory_and_on_disk(tmp_path: Path, compression: str) -> None:
    # zstd squeezes 512 MiB of zeros into a few KiB: a decoder that does not bound its output
    # per call would balloon here.
    from builder.layer import write_layer

    src = tmp_path / "src"
    src.mkdir()
    with open(src / "zeros.img", "wb") as f:
        f.truncate(GIB // 2)
    blob = tmp_path / "layer.blob"
    with open(blob, "wb") as out:
        write_layer(src, out, compression=compression)
    dest = tmp_path / "dest"
    dest.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _UNPACK_SCRIPT, str(blob), str(dest)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2],
    )
    report = json.loads(result.stdout)
    growth_mib = (report["after_kib"] - report["before_kib"]) / 1024
    assert growth_mib < 80, f"RSS grew by {growth_mib:.0f} MiB while unpacking"
    st = (dest / "zeros.img").stat()
    assert st.st_size == GIB // 2
    assert st.st_blocks * 512 < 1 << 20  # holes, not 512 MiB of written zeros
