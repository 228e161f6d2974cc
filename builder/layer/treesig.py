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
# Checkpoints: the signature so far, kept when the entries or the content bytes walked reach
# the next of these marks (doubling, so a huge layer keeps a few dozen). An export checks each
# as it passes it, so a dir that changed (a link to every file moves every ctime) is given up
# on early, not after a whole unhashed tar was compressed for nothing.
_FIRST_ENTRIES = 256
_FIRST_BYTES = 16 << 20
_MARK = 16  # hex digits kept per checkpoint


class TreeSignature:
    """Fed by the tar writer as it goes; `value()` once the tar is written. With `expected` (a
    value taken before), TreeChanged is raised at the first checkpoint that differs."""

    def __init__(self, source_date_epoch: int | None, expected: str | None = None) -> None:
        self._hash = hashlib.sha256(f"layer tar v{TAR_WRITER_VERSION} epoch {source_date_epoch}\n".encode())
        self._checkpoints: list[str] = []
        self._expected = None if expected is None else expected.partition("/")[2].split(".")
        self._entries = self._bytes = 0
        self._next_entries, self._next_bytes = _FIRST_ENTRIES, _FIRST_BYTES

    def header(self, block: bytes) -> None:
        self._hash.update(block)
        self._entries += 1
        if self._entries >= self._next_entries:
            self._next_entries *= 2
            self._checkpoint()

    def content(self, st: os.stat_result) -> None:
        """The file whose bytes follow the last header, as fstat saw it before they were read."""
        self._hash.update(_INODE.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        self._bytes += st.st_size
        if self._bytes >= self._next_bytes:
            while self._bytes >= self._next_bytes:
                self._next_bytes *= 2
            self._checkpoint()

    def _checkpoint(self) -> None:
        mark = self._hash.copy().hexdigest()[:_MARK]
        if self._expected is not None:
            index = len(self._checkpoints)
            if index >= len(self._expected) or self._expected[index] != mark:
                raise TreeChanged(f"the dir differs from its signature by entry {self._entries}")
        self._checkpoints.append(mark)

    def value(self) -> str:
        return f"v{TAR_WRITER_VERSION}:{self._hash.hexdigest()}/{'.'.join(self._checkpoints)}"


@dataclass(frozen=True)
class Trusted:
    """A layer dir's diff_id and the signature it had when its tar was hashed to it."""

    diff_id: str
    signature: str


class TreeChanged(Exception):
    """The dir's signature differs from the trusted one: the tar written so far was not hashed
    and may not be the layer; the caller drops it and writes the layer again, hashing it."""
