"""A layer dir's signature: what the tar written from it depends on, gathered by the tar writer
during the walk it makes anyway.

The signature hashes every header the writer emits (names, order, types, modes, owners, whole
second mtimes, link targets, xattrs, device numbers, whiteout and opaque markers: all of it, as
bytes) and, for each regular file whose bytes follow a header, the inode they were read from:
device, inode number, size, mtime and ctime in nanoseconds. ctime cannot be set from user space:
any write, truncate, chmod, chown, xattr change, link or utime since then moves it on.

So a dir whose signature equals the one taken while its tar was hashed to its diff_id writes the
same tar again, and an export need not hash the tar a second time (`stream_layer(trusted=...)`).
Not covered, as with any stat-based cache: a write within the same clock tick as the ctime it
would change, a change made below the file system (bit rot), and a clock set back; `fsck` still
hashes every snapshot.
"""
from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

# Bump when the writer changes what it writes without the headers showing it (how content
# follows a header, padding, the end of the archive): signatures taken before then stop matching.
TAR_WRITER_VERSION = 1

_INODE = struct.Struct("<QQqqq")


class TreeSignature:
    """Fed by the tar writer as it goes; `value()` once the tar is written."""

    def __init__(self, source_date_epoch: int | None) -> None:
        self._hash = hashlib.sha256(f"layer tar v{TAR_WRITER_VERSION} epoch {source_date_epoch}\n".encode())

    def header(self, block: bytes) -> None:
        self._hash.update(block)

    def content(self, st: os.stat_result) -> None:
        """The file whose bytes follow the last header, as fstat saw it before they were read."""
        self._hash.update(_INODE.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))

    def value(self) -> str:
        return f"v{TAR_WRITER_VERSION}:{self._hash.hexdigest()}"


@dataclass(frozen=True)
class Trusted:
    """A layer dir's diff_id and the signature it had when its tar was hashed to it."""

    diff_id: str
    signature: str


class TreeChanged(Exception):
    """The dir's signature differs from the trusted one: the tar just written was not hashed and
    may not be the layer; the caller drops it and writes the layer again, hashing it."""
