"""Any layer dir, written as a tar, unpacked and written again, gives the same bytes and digests.

Trees are drawn at random: files, dirs, symlinks, hard links, whiteouts, opaque dirs, odd
modes, owners, mtimes, xattrs, non-ASCII and long names (past tar's 100-byte name field).
"""
from __future__ import annotations

import io
import os
import stat
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.layer import unpack_layer, write_layer
from builder.userns import opaque_xattr

from .conftest import requires_root

pytestmark = requires_root

name_parts = st.one_of(
    st.sampled_from(["a", "b", "etc", "usr", "x.txt", "é", "日本", "\udcff", "n" * 120]),
    st.text(alphabet="abcxyz-_.", min_size=1, max_size=8).filter(lambda t: t not in (".", "..")),
).filter(lambda t: not t.startswith(".wh."))
paths = st.lists(name_parts, min_size=1, max_size=3).map(tuple)
entries = st.lists(
    st.tuples(
        paths,
        st.sampled_from(["file", "dir", "symlink", "hardlink", "whiteout", "opaque"]),
        st.integers(0, 0o7777),  # mode bits, setuid & co included
        st.integers(0, 70_000),  # uid and gid (past 65535)
        st.integers(0, 2**33),  # mtime (past 2038 and 8**11 octal digits)
        st.binary(max_size=3000),  # content, or the xattr value
    ),
    max_size=25,
)


def _make(root: Path, drawn: list) -> None:
    files: list[Path] = []
    for parts, kind, mode, owner, mtime, data in drawn:
        path = root.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(path):
                continue
            if kind == "file":
                path.write_bytes(data)
                os.chmod(path, mode)
                files.append(path)
            elif kind == "dir":
                path.mkdir()
                os.chmod(path, mode | 0o700)
                if data:
                    os.setxattr(path, "user.drawn", data[:200])
            elif kind == "symlink":
                os.symlink(os.fsdecode(data[:50]).replace("\0", "") or "target", path)
            elif kind == "hardlink" and files:
                os.link(files[len(data) % len(files)], path)
            elif kind == "whiteout":
                os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))
            elif kind == "opaque":
                path.mkdir()
                os.setxattr(path, opaque_xattr(), b"y")
            else:
                continue
            os.lchown(path, owner, owner + 1)
            os.utime(path, ns=(mtime * 10**9, mtime * 10**9), follow_symlinks=False)
        except (NotADirectoryError, FileExistsError):
            continue  # a drawn path through a file: not a tree


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=entries, compression=st.sampled_from(["gzip", "zstd", "uncompressed"]),
       epoch=st.one_of(st.none(), st.integers(0, 2**32)))
def test_write_unpack_write_gives_the_same_layer(drawn, compression, epoch):
    with tempfile.TemporaryDirectory() as scratch:
        tree, unpacked = Path(scratch) / "tree", Path(scratch) / "unpacked"
        tree.mkdir()
        unpacked.mkdir()
        _make(tree, drawn)
        first = io.BytesIO()
        digests = write_layer(tree, first, compression=compression, source_date_epoch=epoch)
        unpack_layer(io.BytesIO(first.getvalue()), unpacked)
        second = io.BytesIO()
        again = write_layer(unpacked, second, compression=compression, source_date_epoch=epoch)
        assert again == digests
        assert second.getvalue() == first.getvalue()
