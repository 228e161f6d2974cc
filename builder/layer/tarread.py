"""Read layer tars safely: member iteration with strict error handling, name validation."""
from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from builder.errors import ArchiveError

from .decompress import ByteSource, open_layer_stream

XATTR_PAX_PREFIX = "SCHILY.xattr."
_TAIL_KEEP = 64 * 1024


class _RecordingReader:
    """Counts bytes read and keeps the last ones, to inspect where tarfile stopped."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.position = 0
        self._tail = bytearray()

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.position += len(data)
        self._tail += data
        if len(self._tail) > _TAIL_KEEP:
            del self._tail[: len(self._tail) - _TAIL_KEEP]
        return data

    def recorded(self, start: int) -> bytes:
        """Bytes read from absolute offset `start` on (as far as still kept)."""
        tail_start = self.position - len(self._tail)
        return bytes(self._tail[max(start - tail_start, 0) :])

    def drain(self) -> None:
        # Reading to the end makes the decompressor verify its checksum and trailer.
        while self._inner.read(1 << 20):
            pass


class _MemberReader:
    """A member's content; a short or corrupt stream raises ArchiveError, naming the member."""

    def __init__(self, inner: ByteSource, name: str) -> None:
        self._inner = inner
        self._name = name

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size)
        except (tarfile.TarError, EOFError) as err:
            raise ArchiveError(f"truncated or corrupt tar archive in {self._name!r}: {err}") from err


def split_member_name(name: str, *, what: str = "entry") -> tuple[str, ...]:
    """Path components of a tar name; absolute names and `..` are refused, `.`/empty dropped."""
    if "\x00" in name:
        raise ArchiveError(f"tar {what} {name!r} contains a NUL byte")
    if name.startswith("/"):
        raise ArchiveError(
            f"tar {what} {name!r} is an absolute path",
            hint="layer tars must use relative names",
        )
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"tar {what} {name!r} contains a '..' component (would escape the target)")
    return parts


def member_xattrs(info: tarfile.TarInfo) -> dict[str, bytes]:
    """xattrs carried as SCHILY.xattr.* PAX records, values as the original bytes."""
    result: dict[str, bytes] = {}
    for key, value in info.pax_headers.items():
        if key.startswith(XATTR_PAX_PREFIX):
            result[key[len(XATTR_PAX_PREFIX) :]] = value.encode("utf-8", "surrogateescape")
    return result


def iter_tar(stream: ByteSource) -> Iterator[tuple[tarfile.TarInfo, ByteSource | None]]:
    """(member, content reader for regular files) for each entry of a possibly compressed tar.

    The content reader is only valid until the next item is requested. Corrupt, truncated or
    garbage input raises ArchiveError.
    """
    recorder = _RecordingReader(open_layer_stream(stream))
    try:
        # typeshed wants a file that also writes, seeks and tells, as the other modes do; a
        # stream mode ("r|") only ever reads from it.
        tar = tarfile.open(  # type: ignore[call-overload]
            fileobj=recorder,
            mode="r|",
            encoding="utf-8",
            errors="surrogateescape",
        )
    except tarfile.ReadError as err:
        raise ArchiveError(f"not a valid tar archive: {err}") from err
    try:
        with tar:
            while True:
                try:
                    info = tar.next()
                except tarfile.TarError as err:
                    raise ArchiveError(f"corrupt tar archive: {err}") from err
                if info is None:
                    break
                if info.isreg():
                    content = tar.extractfile(info)
                    assert content is not None  # tarfile gives every regular file a reader
                    yield info, _MemberReader(content, info.name)
                else:
                    yield info, None
            # tarfile ends quietly on a bad header after the first member; insist that it
            # stopped at a real end-of-archive block (or at a clean end of the stream).
            stop = recorder.recorded(tar.offset)[: tarfile.BLOCKSIZE]
            if stop.strip(b"\x00"):
                raise ArchiveError(
                    f"corrupt tar archive: invalid header at offset {tar.offset}"
                )
            recorder.drain()
    except tarfile.TarError as err:
        raise ArchiveError(f"corrupt or truncated tar archive: {err}") from err
    except EOFError as err:
        raise ArchiveError(f"truncated tar archive: {err}") from err


TYPE_NAMES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.GNUTYPE_SPARSE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.FIFOTYPE: "fifo",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
}


@dataclass(frozen=True)
class LayerEntry:
    """One tar entry as tests and `builder diff` see it."""

    name: str  # as in the tar (directories keep no trailing slash; tarfile strips it)
    type: str  # file, dir, symlink, hardlink, fifo, char, block, or other:<typeflag>
    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    size: int
    mtime: int | float
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    sha256: str | None = None  # "sha256:<hex>" of a regular file's content


def iter_layer_entries(stream: ByteSource) -> Iterator[LayerEntry]:
    """The entries of a (possibly compressed) layer tar, in archive order, with content hashes."""
    for info, reader in iter_tar(stream):
        digest = None
        if reader is not None:
            hasher = hashlib.sha256()
            while chunk := reader.read(1 << 20):
                hasher.update(chunk)
            digest = "sha256:" + hasher.hexdigest()
        type_name = TYPE_NAMES.get(info.type, "other:" + info.type.decode("latin-1"))
        yield LayerEntry(
            name=info.name,
            type=type_name,
            mode=info.mode,
            uid=info.uid,
            gid=info.gid,
            size=info.size,
            mtime=info.mtime,
            linkname=info.linkname,
            devmajor=info.devmajor if info.ischr() or info.isblk() else 0,
            devminor=info.devminor if info.ischr() or info.isblk() else 0,
            xattrs=member_xattrs(info),
            sha256=digest,
        )
