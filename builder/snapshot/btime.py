"""Birth time of a file via statx(2) (Python 3.11's os.stat has no st_birthtime on Linux).

The copy snapshotter uses it to tell a directory that was deleted and made again (overlay would
make it opaque) from the one that was there before, even when the file system reuses the inode.
"""
from __future__ import annotations

import ctypes
import os
import struct

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
STATX_BTIME = 0x800
_STATX_SIZE = 256
_BTIME_OFFSET = 80  # struct statx: stx_btime after 5 fields + atime (same on every arch)

# CDLL(None): the libc already loaded. find_library would fork a helper, and in a fresh PID
# namespace the first child forked becomes its pid 1 and takes the namespace down on exit.
_libc = ctypes.CDLL(None, use_errno=True)
_statx = getattr(_libc, "statx", None)


def birth_time_ns(path: str | os.PathLike[str]) -> int | None:
    """Nanoseconds since the epoch when `path` (not followed) was created; None if unknown."""
    if _statx is None:
        return None
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    rc = _statx(AT_FDCWD, os.fsencode(path), AT_SYMLINK_NOFOLLOW, STATX_BTIME, buf)
    if rc != 0:
        return None
    mask = struct.unpack_from("=I", buf.raw, 0)[0]
    if not mask & STATX_BTIME:
        return None
    seconds, nanos = struct.unpack_from("=qI", buf.raw, _BTIME_OFFSET)
    return seconds * 1_000_000_000 + nanos
