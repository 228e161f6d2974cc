"""Tar headers for layer members, byte for byte as tarfile writes them in PAX format.

Most members of a layer need nothing beyond a plain ustar block (an ASCII name that fits, no
xattrs, numbers that fit their octal fields): that block is built here directly, several times
faster than `TarInfo.tobuf`, which checks and converts every field through dicts. Anything else
goes through tarfile itself, so the bytes never depend on which path made them.
"""
from __future__ import annotations

import tarfile

_NAME_MAX = 100
_OWNER_NAME_MAX = 32
_SMALL_MAX = 8**7  # uid, gid, device numbers: 7 octal digits
_LARGE_MAX = 8**11  # size, mtime: 11 octal digits
_NO_DEVICE = b"\0" * 16
_PREFIX_AND_PAD = b"\0" * (155 + 12)
_CHECKSUM_SPACES = 8 * ord(" ")
_MAGIC_SUM = sum(tarfile.POSIX_MAGIC)


def _ascii(text: str, limit: int) -> bytes | None:
    if len(text) > limit or not text.isascii():
        return None
    return text.encode("ascii")


def member_header(info: tarfile.TarInfo) -> bytes:
    """The header block(s) tarfile writes for `info` with PAX_FORMAT, utf-8, surrogateescape."""
    name = info.name + "/" if info.type == tarfile.DIRTYPE and not info.name.endswith("/") else info.name
    encoded_name = _ascii(name, _NAME_MAX)
    linkname = _ascii(info.linkname, _NAME_MAX)
    uname = _ascii(info.uname, _OWNER_NAME_MAX)
    gname = _ascii(info.gname, _OWNER_NAME_MAX)
    block = None
    if not info.pax_headers and type(info.mtime) is int and None not in (encoded_name, linkname, uname, gname):
        assert encoded_name is not None and linkname is not None and uname is not None and gname is not None
        device = (info.devmajor, info.devminor) if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE) else None
        block = ustar_header(encoded_name, info.mode, info.uid, info.gid, info.size, info.mtime, info.type,
                             linkname, device, uname, gname)
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") if block is None else block


def ustar_header(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes,
                 linkname: bytes = b"", device: tuple[int, int] | None = None, uname: bytes = b"",
                 gname: bytes = b"") -> bytes | None:
    """The one ustar block tarfile writes for a member needing no PAX record (a directory's name
    ends with "/"); None when it needs one: a name or link target that is not ASCII or longer
    than 100 bytes, or a number too large for its field. `uname` and `gname` must be ASCII of at
    most 32 bytes (the caller checks)."""
    if (len(name) > _NAME_MAX or len(linkname) > _NAME_MAX or not name.isascii() or not linkname.isascii()
            or not (0 <= uid < _SMALL_MAX and 0 <= gid < _SMALL_MAX and 0 <= size < _LARGE_MAX
                    and 0 <= mtime < _LARGE_MAX)):
        return None
    if device is not None and not (0 <= device[0] < _SMALL_MAX and 0 <= device[1] < _SMALL_MAX):
        return None
    numbers = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode & 0o7777, uid, gid, size, mtime)
    devices = _NO_DEVICE if device is None else b"%07o\0%07o\0" % device
    # The checksum is the sum of the block's bytes with its own field as spaces; zero padding adds
    # nothing, so only the fields are summed (not 512 bytes).
    checksum = (sum(name) + sum(numbers) + _CHECKSUM_SPACES + kind[0] + sum(linkname) + _MAGIC_SUM + sum(uname)
                + sum(gname) + sum(devices))
    return b"".join((
        name.ljust(_NAME_MAX, b"\0"),
        numbers,
        b"%06o\0 " % checksum,
        kind,
        linkname.ljust(_NAME_MAX, b"\0"),
        tarfile.POSIX_MAGIC,
        uname.ljust(_OWNER_NAME_MAX, b"\0"),
        gname.ljust(_OWNER_NAME_MAX, b"\0"),
        devices,
        _PREFIX_AND_PAD,
    ))
