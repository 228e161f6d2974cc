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
_CHECKSUM_AT = 148


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
    numbers_fit = (
        type(info.mtime) is int
        and 0 <= info.uid < _SMALL_MAX
        and 0 <= info.gid < _SMALL_MAX
        and 0 <= info.size < _LARGE_MAX
        and 0 <= info.mtime < _LARGE_MAX
    )
    device = info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE)
    if device and not (0 <= info.devmajor < _SMALL_MAX and 0 <= info.devminor < _SMALL_MAX):
        numbers_fit = False
    if info.pax_headers or not numbers_fit or None in (encoded_name, linkname, uname, gname):
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert encoded_name is not None and linkname is not None and uname is not None and gname is not None
    assert type(info.mtime) is int  # numbers_fit checked it; TarInfo types it as int | float
    block = b"".join((
        encoded_name.ljust(_NAME_MAX, b"\0"),
        b"%07o\0" % (info.mode & 0o7777),
        b"%07o\0" % info.uid,
        b"%07o\0" % info.gid,
        b"%011o\0" % info.size,
        b"%011o\0" % info.mtime,
        b"        ",  # the checksum counts its own field as spaces
        info.type,
        linkname.ljust(_NAME_MAX, b"\0"),
        tarfile.POSIX_MAGIC,
        uname.ljust(_OWNER_NAME_MAX, b"\0"),
        gname.ljust(_OWNER_NAME_MAX, b"\0"),
        b"%07o\0%07o\0" % (info.devmajor, info.devminor) if device else _NO_DEVICE,
        _PREFIX_AND_PAD,
    ))
    checksum = b"%06o\0" % sum(block)
    return block[:_CHECKSUM_AT] + checksum + block[_CHECKSUM_AT + len(checksum):]
