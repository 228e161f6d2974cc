"""The pieces of a case's build context, and writing them to a directory.

Contexts are made by the suite, not stored in git: git keeps neither modes other than 644/755,
nor hard links, nor the owners and tar members some cases need.
"""
from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Union

TAR_MTIME = 1577836800  # members of the tars the suite makes; the context's own files keep real times


@dataclass(frozen=True)
class File:
    data: str | bytes
    mode: int = 0o644
    owner: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755
    owner: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class HardLink:
    """A second name for another context path (written before this one)."""

    target: str


@dataclass(frozen=True)
class TarMember:
    name: str
    data: bytes = b""
    kind: bytes = tarfile.REGTYPE
    mode: int = 0o644
    linkname: str = ""
    owner: tuple[int, int] = (0, 0)
    xattrs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Tar:
    members: tuple[TarMember, ...]
    compression: str = ""  # "", "gz", "bz2" or "xz"


Item = Union[str, File, Dir, Symlink, HardLink, Tar]


def write_context(root: Path, items: Mapping[str, Item]) -> None:
    """Write `items` (path inside the context -> what is there) below `root`, in the given order.

    Files keep the time they are written at: BuildKit's context transfer takes a file with the
    same size and mtime as in its last transfer from the same directory to be unchanged."""
    root.mkdir(parents=True)
    for relative, item in items.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        match item:
            case str() | bytes():
                _write_file(path, File(item))
            case File():
                _write_file(path, item)
            case Dir():
                path.mkdir(exist_ok=True)
                os.chown(path, *item.owner)
                os.chmod(path, item.mode)
            case Symlink():
                os.symlink(item.target, path)
            case HardLink():
                os.link(root / item.target, path)
            case Tar():
                path.write_bytes(tar_bytes(item))
                os.chmod(path, 0o644)


def _write_file(path: Path, item: File) -> None:
    path.write_bytes(item.data.encode() if isinstance(item.data, str) else item.data)
    os.chown(path, *item.owner)
    os.chmod(path, item.mode)


def tar_bytes(tar: Tar) -> bytes:
    buffer = io.BytesIO()
    mode = f"w:{tar.compression}" if tar.compression else "w"
    with tarfile.open(fileobj=buffer, mode=mode, format=tarfile.PAX_FORMAT) as out:  # type: ignore[call-overload]
        for member in tar.members:
            info = tarfile.TarInfo(member.name)
            info.type = member.kind
            info.mode = member.mode
            info.uid, info.gid = member.owner
            info.mtime = TAR_MTIME
            info.linkname = member.linkname
            info.pax_headers = {f"SCHILY.xattr.{key}": value for key, value in member.xattrs}
            data = member.data if member.kind == tarfile.REGTYPE else b""
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
