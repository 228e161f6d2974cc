"""Write a layer dir (overlay-upper format) as a deterministic OCI layer tar.

Order: depth-first, the entries of each directory sorted bytewise by name, a directory before
its contents (so every subtree is contiguous and parents precede children), and an opaque
directory's `.wh..wh..opq` marker right after the directory itself, before any of its children.
"""
from __future__ import annotations

import errno
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from builder.errors import ArchiveError
from builder.userns import is_overlay_xattr, opaque_xattr

from .compress import ByteSink, CountingSink, HandOver, HashingSink, OutputWriteError, open_compressor
from .media import COMPRESSIONS, MEDIA_TYPE_BY_COMPRESSION, LayerDigests
from .tarheader import member_header, ustar_header
from .treesig import TreeChanged, TreeSignature, Trusted

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# The builder's own xattrs in layer dirs: never taken from a tar, never written into one.
BUILDER_XATTR_PREFIX = "user.builder."
# A device node in a rootless store. Only root of the initial user namespace may make one, so
# unpacking in a user namespace leaves an empty regular file with this xattr ("c MAJOR MINOR" or
# "b MAJOR MINOR") and the owner and mode of the node; the tar writer writes the node back, so
# the layer's bytes are those a root build has.
DEVICE_XATTR = BUILDER_XATTR_PREFIX + "device"
# Labels the host's SELinux policy puts on every file: they describe the build machine, not the
# image, and would make layers differ between hosts.
_HOST_XATTRS = frozenset({"security.selinux"})
_COPY_BUFSIZE = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# Files up to this size go out in one write with their header (read whole, in one call).
_SMALL_FILE = 64 << 10
# Mode of the synthetic whiteout and opaque-marker entries (as Docker writes them).
_MARKER_MODE = 0o600


def decode_name(raw: bytes) -> str:
    """File names are bytes; tarfile wants str. surrogateescape keeps non-UTF-8 bytes exact."""
    return raw.decode("utf-8", "surrogateescape")


def is_whiteout(st: os.stat_result) -> bool:
    """overlayfs marks a deleted path with a character device 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def read_xattrs(path: bytes | str | int, *, skip_overlay: bool = True) -> dict[str, bytes]:
    """All xattrs of a path (not following symlinks) or an open file, sorted by name; overlay's own
    (trusted.overlay.* and, for rootless overlay, user.overlay.*) and host SELinux labels omitted."""
    nofollow = {} if isinstance(path, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(path, **nofollow)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    result: dict[str, bytes] = {}
    for name in sorted(names, key=lambda n: n.encode("utf-8", "surrogateescape")):
        if skip_overlay and (is_overlay_xattr(name) or name.startswith(BUILDER_XATTR_PREFIX) or name in _HOST_XATTRS):
            continue
        try:
            result[name] = os.getxattr(path, name, **nofollow)
        except OSError as err:
            if err.errno == errno.ENODATA:
                continue  # removed between list and get
            raise
    return result


def device_marker(kind: int, device: int) -> bytes:
    """The DEVICE_XATTR value standing for a char (S_IFCHR) or block (S_IFBLK) device."""
    return f"{'c' if kind == stat.S_IFCHR else 'b'} {os.major(device)} {os.minor(device)}".encode()


def read_device_marker(path: bytes | str, fd: int | None = None) -> tuple[int, int] | None:
    """(S_IFCHR or S_IFBLK, device number) of an empty file standing for a device node, else None.
    With `fd` (the file, open), the xattr is read from it; `path` only names it in an error."""
    try:
        value = os.getxattr(path, DEVICE_XATTR, follow_symlinks=False) if fd is None else os.getxattr(fd, DEVICE_XATTR)
    except OSError:
        return None
    fields = value.split()
    if len(fields) != 3 or fields[0] not in (b"c", b"b") or not (fields[1].isdigit() and fields[2].isdigit()):
        raise ArchiveError(f"{os.fsdecode(path)} has a malformed {DEVICE_XATTR} xattr {value!r}")
    kind = stat.S_IFCHR if fields[0] == b"c" else stat.S_IFBLK
    return kind, os.makedev(int(fields[1]), int(fields[2]))


def is_opaque_dir(path: bytes | str) -> bool:
    """Whether a layer dir's directory is opaque: its overlay opaque xattr (trusted.*, or user.*
    in a user namespace, see builder.userns) is "y"."""
    try:
        return os.getxattr(path, opaque_xattr(), follow_symlinks=False) == b"y"
    except OSError:
        return False


class _LayerTarInfo(tarfile.TarInfo):
    """TarInfo whose PAX records hold raw bytes without a `hdrcharset=BINARY` record.

    tarfile adds hdrcharset=BINARY as soon as one value is not UTF-8 (a binary
    security.capability xattr, a non-UTF-8 name); GNU tar warns about that keyword. Go's
    archive/tar (Docker, containerd) writes the raw bytes without it, and readers (Go, GNU tar,
    tarfile with surrogateescape) take undecodable values as bytes; so we write the same.
    """

    @classmethod
    def _create_pax_generic_header(cls, pax_headers, type, encoding):
        records = b""
        for keyword, value in pax_headers.items():
            key_bytes = keyword.encode("utf-8", "surrogateescape")
            value_bytes = value.encode("utf-8", "surrogateescape")
            length = len(key_bytes) + len(value_bytes) + 3  # ' ' + '=' + '\n'
            total = prev = 0
            while True:  # the length field counts its own digits
                total = length + len(str(prev))
                if total == prev:
                    break
                prev = total
            records += str(total).encode("ascii") + b" " + key_bytes + b"=" + value_bytes + b"\n"
        info = {
            "name": "././@PaxHeader",
            "type": type,
            "size": len(records),
            "magic": tarfile.POSIX_MAGIC,
        }
        return cls._create_header(info, tarfile.USTAR_FORMAT, "ascii", "replace") + cls._create_payload(records)


@dataclass
class _Member:
    header: bytes
    content_path: bytes | None = None  # regular file whose bytes follow the header
    size: int = 0
    content_fd: int = -1  # that file, open (the consumer closes it)
    content_st: os.stat_result | None = None  # its fstat when it was opened


def layer_mtime(st: os.stat_result, source_date_epoch: int | None) -> int:
    """The mtime a layer records: whole seconds, clamped to the epoch when one is set."""
    seconds = st.st_mtime_ns // 1_000_000_000
    if source_date_epoch is not None and seconds > source_date_epoch:
        return source_date_epoch
    return seconds


class _TarMembers:
    """Walks src_dir and yields the tar members in layer order, with hardlinks detected.

    One generator with an explicit stack (not one per directory level), and a member needing no
    PAX record gets its ustar block straight from the stat result: this walk is the critical
    path of an export whose tar need not be hashed."""

    def __init__(self, src_dir: Path, source_date_epoch: int | None) -> None:
        self._root = os.fsencode(src_dir)
        self._epoch = source_date_epoch
        self._marker_mtime = source_date_epoch if source_date_epoch is not None else 0
        # (st_dev, st_ino) -> tar name of the first path seen with that inode.
        self._links: dict[tuple[int, int], bytes] = {}

    def _marker(self, name: bytes) -> _Member:
        header = ustar_header(name, _MARKER_MODE, 0, 0, 0, self._marker_mtime, tarfile.REGTYPE)
        if header is None:
            info = _LayerTarInfo(decode_name(name))
            info.type = tarfile.REGTYPE
            info.mode = _MARKER_MODE
            info.mtime = self._marker_mtime
            header = member_header(info)
        return _Member(header)

    def __iter__(self) -> Iterator[_Member]:
        root_st = os.lstat(self._root)
        if not stat.S_ISDIR(root_st.st_mode):
            raise ArchiveError(f"layer source {os.fsdecode(self._root)} is not a directory")
        if is_opaque_dir(self._root):
            yield self._marker(OPAQUE_MARKER.encode())
        # Each level: the sorted children of one directory still to be written, and that
        # directory open: its entries are stat'ed and opened relative to it (openat, fstatat),
        # not by a path the kernel walks again from the root for every file.
        root_fd = os.open(self._root, _DIR_FLAGS)
        stack: list[tuple[Iterator[tuple[bytes, bytes, os.stat_result]], int]] = []
        try:
            stack.append((iter(self._children(root_fd, b"")), root_fd))
            while stack:
                children, dir_fd = stack[-1]
                for rel, name, st in children:
                    member = self._member(rel, name, st, dir_fd)
                    if member is not None:
                        yield member
                    if stat.S_ISDIR(st.st_mode):
                        if is_opaque_dir(self._root + b"/" + rel):
                            yield self._marker(rel + b"/" + OPAQUE_MARKER.encode())
                        sub_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                        try:
                            listed = self._children(sub_fd, rel)
                        except BaseException:
                            os.close(sub_fd)
                            raise
                        stack.append((iter(listed), sub_fd))
                        break  # its subtree first, then on with this level
                else:
                    stack.pop()
                    os.close(dir_fd)
        finally:
            for _, fd in stack:
                os.close(fd)

    def _children(self, dir_fd: int, rel_dir: bytes) -> list[tuple[bytes, bytes, os.stat_result]]:
        """(path relative to the root, name, lstat) of a directory's entries, in tar order:
        sorted by the name each gets in the tar (a whiteout is `.wh.NAME`)."""
        children: list[tuple[bytes, bytes, os.stat_result]] = []
        with os.scandir(dir_fd) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)  # fstatat on the open dir
                name = os.fsencode(entry.name)
                children.append((b".wh." + name if is_whiteout(st) else name, name, st))
        children.sort(key=lambda child: child[0])
        prefix = rel_dir + b"/" if rel_dir else b""
        return [(prefix + name, name, st) for _, name, st in children]

    def _member(self, rel: bytes, name: bytes, st: os.stat_result, dir_fd: int) -> _Member | None:
        """The member for one path (`name` in the open directory `dir_fd`); None for a socket
        (GNU tar skips them too). A directory's children are the caller's business. A regular
        file's member holds it open, checked to be still a regular file of the size the walk saw."""
        parent, _, base = rel.rpartition(b"/")
        if is_whiteout(st):
            return self._marker(parent + b"/.wh." + base if parent else b".wh." + base)
        if base.startswith(b".wh."):
            raise ArchiveError(
                f"cannot put {decode_name(rel)!r} in a layer: names starting with .wh. are reserved for whiteouts",
                hint="rename the file",
            )
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            return None
        abs_path = self._root + b"/" + rel
        if stat.S_ISREG(mode) and not (st.st_nlink > 1 and (st.st_dev, st.st_ino) in self._links):
            return self._file_member(rel, name, st, dir_fd, abs_path)
        xattrs = read_xattrs(abs_path)
        if stat.S_ISDIR(mode):
            return _Member(self._header(rel + b"/", st, tarfile.DIRTYPE, xattrs))
        if st.st_nlink > 1:
            first = self._links.get((st.st_dev, st.st_ino))
            if first is not None:
                return _Member(self._header(rel, st, tarfile.LNKTYPE, xattrs, linkname=first))
            self._links[(st.st_dev, st.st_ino)] = rel
        if stat.S_ISLNK(mode):
            return _Member(self._header(rel, st, tarfile.SYMTYPE, xattrs, linkname=os.readlink(abs_path)))
        if stat.S_ISFIFO(mode):
            return _Member(self._header(rel, st, tarfile.FIFOTYPE, xattrs))
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            return _Member(self._header(rel, st, tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE, xattrs,
                                        device=(os.major(st.st_rdev), os.minor(st.st_rdev))))
        return None  # no other kind of file exists; nothing to write for one if it did

    def _file_member(self, rel: bytes, name: bytes, st: os.stat_result, dir_fd: int, abs_path: bytes) -> _Member:
        """A regular file (the first name of its inode): opened, its xattrs read from the open file;
        an empty one may stand for a device node (DEVICE_XATTR), then written as that node."""
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode) or opened.st_size != st.st_size:
                raise _changed(abs_path)
            xattrs = read_xattrs(fd)
            if st.st_nlink > 1:
                self._links[(st.st_dev, st.st_ino)] = rel
            device = read_device_marker(abs_path, fd) if st.st_size == 0 else None
            if device is None:
                return _Member(self._header(rel, st, tarfile.REGTYPE, xattrs, size=st.st_size), abs_path,
                               st.st_size, fd, opened)
            kind = tarfile.CHRTYPE if device[0] == stat.S_IFCHR else tarfile.BLKTYPE
            node = _Member(self._header(rel, st, kind, xattrs, device=(os.major(device[1]), os.minor(device[1]))))
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # a device node: no bytes follow its header
        return node

    def _header(self, name: bytes, st: os.stat_result, kind: bytes, xattrs: dict[str, bytes], *, size: int = 0,
                linkname: bytes = b"", device: tuple[int, int] | None = None) -> bytes:
        mtime = layer_mtime(st, self._epoch)
        if not xattrs:
            header = ustar_header(name, st.st_mode, st.st_uid, st.st_gid, size, mtime, kind, linkname, device)
            if header is not None:
                return header
        info = _LayerTarInfo(decode_name(name.removesuffix(b"/") if kind == tarfile.DIRTYPE else name))
        info.type = kind
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid = st.st_uid
        info.gid = st.st_gid
        info.mtime = mtime
        info.size = size
        info.linkname = decode_name(linkname)
        if device is not None:
            info.devmajor, info.devminor = device
        info.pax_headers = {"SCHILY.xattr." + key: decode_name(value) for key, value in xattrs.items()}
        return member_header(info)


def _write_tar(members: Iterable[_Member], out: ByteSink, signature: TreeSignature | None = None) -> None:
    """The members as a tar stream, the bytes tarfile would write (PAX format, 512-byte blocks,
    two zero blocks at the end, padded to a 10 KiB record), with less work per member: a small
    file goes out as one write of header, content and padding. `signature` is fed every header
    and the inode each file's bytes come from."""
    offset = 0
    buffer = bytearray(_COPY_BUFSIZE)
    for member in members:
        header = member.header
        fd = member.content_fd
        try:
            if signature is not None:
                signature.header(header)
            if fd < 0:
                out.write(header)
                offset += len(header)
                continue
            size = member.size
            padding = -size % tarfile.BLOCKSIZE
            st = member.content_st
            assert member.content_path is not None and st is not None
            if signature is not None:
                signature.content(st)
            if size <= _SMALL_FILE:
                data = _read_small(fd, size, member.content_path)
                out.write(header + data + tarfile.NUL * padding)
            else:
                out.write(header)
                _copy_content(fd, size, buffer, out, member.content_path)
                if signature is not None:
                    # Its bytes took many reads: a write meanwhile must not pass for the inode
                    # the signature names (one read of a small file leaves no such window).
                    _check_unchanged(fd, st, member.content_path)
                out.write(tarfile.NUL * padding)
        finally:
            if fd >= 0:
                os.close(fd)
        offset += len(header) + size + padding
    end = tarfile.NUL * (2 * tarfile.BLOCKSIZE)
    offset += len(end)
    out.write(end + tarfile.NUL * (-offset % tarfile.RECORDSIZE))


def _read_small(fd: int, size: int, path: bytes) -> bytes:
    data = os.read(fd, size) if size else b""
    while len(data) < size:  # a short read: rare for a regular file, but allowed
        more = os.read(fd, size - len(data))
        if not more:
            raise _changed(path)
        data += more
    return data


def _copy_content(fd: int, size: int, buffer: bytearray, out: ByteSink, path: bytes) -> None:
    left = size
    with memoryview(buffer) as view:
        while left:
            got = os.readv(fd, [view[: min(left, len(view))]])
            if not got:
                raise _changed(path)
            out.write(view[:got])
            left -= got


def _changed(path: bytes) -> ArchiveError:
    return ArchiveError(f"{os.fsdecode(path)} changed while the layer was being written")


def _check_unchanged(fd: int, before: os.stat_result, path: bytes) -> None:
    after = os.fstat(fd)
    if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (before.st_size, before.st_mtime_ns, before.st_ctime_ns):
        raise _changed(path)


def _stop(hand_over: HandOver | None) -> None:
    """Wait for the compressing thread after a failure; its own error, if any, is secondary."""
    if hand_over is not None:
        hand_over.stop()


def write_layer(
    src_dir: Path,
    out: ByteSink,
    *,
    compression: str = "gzip",
    level: int | None = None,
    source_date_epoch: int | None = None,
    threads: int | None = None,
    signature: TreeSignature | None = None,
) -> LayerDigests:
    """Stream the layer tar of `src_dir` into `out`, compressed; one pass, constant memory.
    An unknown compression is refused by `stream_layer` before anything is written."""
    # Uncompressed, the blob is the tar: its digest is the diff_id, hashed once.
    hashed = None if compression == "uncompressed" else HashingSink(out)
    diff_id, size = stream_layer(src_dir, out if hashed is None else hashed, compression=compression, level=level,
                                 source_date_epoch=source_date_epoch, threads=threads, signature=signature)
    digest = diff_id if hashed is None else hashed.digest()
    return LayerDigests(diff_id=diff_id, digest=digest, size=size,
                        media_type=MEDIA_TYPE_BY_COMPRESSION[compression])


def stream_layer(
    src_dir: Path,
    out: ByteSink,
    *,
    compression: str = "gzip",
    level: int | None = None,
    source_date_epoch: int | None = None,
    threads: int | None = None,
    signature: TreeSignature | None = None,
    trusted: Trusted | None = None,
) -> tuple[str, int]:
    """Like `write_layer`, for an `out` that hashes what it is given itself (a store blob
    writer): the blob is not hashed here a second time. Returns (diff_id, blob size).

    `signature`, when given, is fed the dir's signature (builder.layer.treesig) as the tar is
    written. With `trusted` instead, the tar is not hashed at all: when the dir's signature is
    `trusted.signature`, the dir is as it was when its tar hashed to `trusted.diff_id`, which is
    returned; otherwise TreeChanged is raised, at the first checkpoint of the signature that
    differs or at the end (`out` then holds part of a tar nobody checked: the caller drops it)."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown layer compression {compression!r} (want one of {COMPRESSIONS})")
    if trusted is not None:
        if signature is not None:
            raise ValueError("a trusted layer's signature is checked, not taken")
        signature = TreeSignature(source_date_epoch, expected=trusted.signature)
    blob = CountingSink(out, is_output=True)
    # The compressed output is written (and hashed, by a store blob writer) in a thread of its
    # own, beside the tar writing and compressing: hashlib, zlib, zstd and file writes release
    # the GIL. The compressor runs in the tar's thread: its input never crosses threads, only
    # its smaller output does, and the two threads' shares of the work come out about even (the
    # tar thread walks and reads, the other hashes and writes). A third thread, or the
    # compressor on the output's side, measured slower on two cores.
    hand_over = None if compression == "uncompressed" else HandOver(blob)
    try:
        compressor = open_compressor(compression, blob if hand_over is None else hand_over, level=level,
                                     threads=threads)
    except OutputWriteError as err:  # the gzip header already goes out
        _stop(hand_over)
        raise err.error from None
    except BaseException:
        _stop(hand_over)
        raise
    tar_stream = HashingSink(compressor) if trusted is None else None
    try:
        _write_tar(_TarMembers(Path(src_dir), source_date_epoch), tar_stream or compressor, signature)
        compressor.close()
        if hand_over is not None:
            hand_over.finish()
    except OutputWriteError as err:
        compressor.abort()
        _stop(hand_over)
        raise err.error from None  # the caller's own output failed (disk full...): its error
    except OSError as err:
        compressor.abort()
        _stop(hand_over)
        raise ArchiveError(f"cannot write layer from {src_dir}: {err}") from err
    except BaseException:
        compressor.abort()
        _stop(hand_over)
        raise
    if tar_stream is not None:
        return tar_stream.digest(), blob.size
    assert trusted is not None and signature is not None
    if signature.value() != trusted.signature:
        raise TreeChanged(f"{src_dir} changed since its tar was hashed to {trusted.diff_id}")
    return trusted.diff_id, blob.size
