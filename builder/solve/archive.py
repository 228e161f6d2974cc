"""ADD's local-archive rule: a tar (plain, gzip, bzip2, xz or zstd, recognised by its bytes, never
by its name) is unpacked into the destination directory; anything else is copied as a file.

Docker decides "is an archive" by decompressing and asking a tar reader for the first header; a
compressed file that does not hold a tar, or an empty tar, is copied as it is. Extraction here is
stricter than Docker's on purpose: an entry with an absolute name or a `..` component, a hard link
to something outside the archive, and an entry whose path goes through a symlink (made by this
archive or this instruction) are ArchiveErrors, so nothing is ever written outside the staging dir.
"""
from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO, Protocol

from builder.errors import ArchiveError, Pos

_COPY_BUFFER = 1 << 20
_SKIPPED_XATTR_PREFIXES = ("trusted.overlay.",)

def open_decompressed(fileobj: BinaryIO) -> BinaryIO:
    """The uncompressed bytes of `fileobj`, whatever of the supported compressions it uses."""
    from builder.layer.decompress import open_layer_stream  # the layer package: only for a real ADD

    return open_layer_stream(fileobj)


def is_tar_archive(path: Path) -> bool:
    """True when `path` (possibly compressed) starts with a valid tar header."""
    try:
        with open(path, "rb") as raw:
            stream = open_decompressed(raw)
            block = b""
            while len(block) < tarfile.BLOCKSIZE:
                piece = stream.read(tarfile.BLOCKSIZE - len(block))
                if not piece:
                    break
                block += piece
    except (OSError, EOFError, ArchiveError, ValueError):
        return False
    except Exception:  # any decoder failure means "not an archive we can unpack"
        return False
    if len(block) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


class StagingWriter(Protocol):
    """What extraction needs from the staging tree (implemented by builder.solve.copy)."""

    def host_path(self, image_path: str) -> Path: ...

    def ensure_dir(self, image_path: str) -> Path: ...

    def prepare_target(self, image_path: str, *, replace_dir: bool) -> Path: ...

    def set_dir_meta(self, image_path: str, mode: int, uid: int, gid: int, mtime_ns: int) -> None: ...

    def record(self, image_path: str) -> None: ...


def _archive_name(raw: str, archive: str, pos: Pos | None) -> str:
    name = raw
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if name in ("", "."):
        return ""
    if name.startswith("/"):
        raise ArchiveError(
            f'archive "{archive}" has an entry with an absolute name: "{raw}"',
            pos=pos,
            hint="entries of an ADD archive must be relative paths",
        )
    parts = name.split("/")
    if ".." in parts:
        raise ArchiveError(
            f'archive "{archive}" has an entry that climbs out with "..": "{raw}"',
            pos=pos,
            hint="the archive is unsafe to extract; rebuild it without .. in entry names",
        )
    return "/".join(p for p in parts if p not in ("", "."))


def extract_tar(
    path: Path,
    staging: StagingWriter,
    dest_dir: str,
    *,
    chown: tuple[int, int] | None,
    pos: Pos | None = None,
    display_name: str | None = None,
) -> None:
    """Unpack the (compressed) tar at `path` under image directory `dest_dir` in the staging tree."""
    archive = display_name or path.name
    staging.ensure_dir(dest_dir)
    extracted: set[str] = set()
    try:
        with open(path, "rb") as raw:
            stream = open_decompressed(raw)
            with tarfile.open(fileobj=stream, mode="r|", errorlevel=2) as tar:
                for member in tar:
                    _extract_member(tar, member, staging, dest_dir, chown, archive, pos, extracted)
    except ArchiveError as exc:
        if exc.pos is not None or f'"{archive}"' in exc.message:
            raise
        # a decoder failure from the layer reader: say which ADD source it was
        raise ArchiveError(f'archive "{archive}": {exc.message}', pos=pos, hint=exc.hint) from None
    except (tarfile.TarError, EOFError) as exc:
        raise ArchiveError(f'archive "{archive}" is corrupt: {exc}', pos=pos) from None
    except ValueError as exc:  # the staging tree refused a path (symlink in the way)
        raise ArchiveError(f'archive "{archive}": {exc}', pos=pos, hint="the archive is unsafe to extract") from None


def _extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    staging: StagingWriter,
    dest_dir: str,
    chown: tuple[int, int] | None,
    archive: str,
    pos: Pos | None,
    extracted: set[str],
) -> None:
    name = _archive_name(member.name, archive, pos)
    if not name:
        if member.isdir():  # "./" itself: metadata for the destination dir is left as made
            return
        raise ArchiveError(f'archive "{archive}" has an entry with an empty name', pos=pos)
    image_path = posixpath.join(dest_dir, name)
    uid, gid = chown if chown is not None else (member.uid, member.gid)
    mode = member.mode & 0o7777
    mtime_ns = int(member.mtime) * 1_000_000_000
    parent = posixpath.dirname(image_path)
    staging.ensure_dir(parent)

    if member.isdir():
        host = staging.prepare_target(image_path, replace_dir=False)
        if not host.is_dir():
            os.mkdir(host, 0o700)
        os.chown(host, uid, gid)
        os.chmod(host, mode)
        _apply_xattrs(host, member)
        staging.set_dir_meta(image_path, mode, uid, gid, mtime_ns)
        staging.record(image_path)
        extracted.add(name)
        return

    host = staging.prepare_target(image_path, replace_dir=True)
    if member.isreg():
        source = tar.extractfile(member)
        assert source is not None
        fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, _COPY_BUFFER)
            os.fchown(out.fileno(), uid, gid)
            os.fchmod(out.fileno(), mode)
    elif member.issym():
        os.symlink(member.linkname, host)
        os.chown(host, uid, gid, follow_symlinks=False)
    elif member.islnk():
        target_name = _archive_name(member.linkname, archive, pos)
        if target_name not in extracted:
            raise ArchiveError(
                f'archive "{archive}": hard link "{member.name}" points to "{member.linkname}",'
                " which is not an earlier entry of the archive",
                pos=pos,
                hint="hard links in an ADD archive may only join entries of the same archive",
            )
        target_host = staging.host_path(posixpath.join(dest_dir, target_name))
        if stat.S_ISDIR(os.lstat(target_host).st_mode):
            raise ArchiveError(f'archive "{archive}": hard link "{member.name}" to a directory', pos=pos)
        os.link(target_host, host, follow_symlinks=False)
        staging.record(image_path)
        extracted.add(name)
        return
    elif member.ischr() or member.isblk():
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        os.mknod(host, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        os.chown(host, uid, gid)
        os.chmod(host, mode)
    elif member.isfifo():
        os.mkfifo(host, 0o600)
        os.chown(host, uid, gid)
        os.chmod(host, mode)
    else:
        return  # other kinds (e.g. GNU volume headers) hold nothing to write
    _apply_xattrs(host, member)
    os.utime(host, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
    staging.record(image_path)
    extracted.add(name)


def _apply_xattrs(host: Path, member: tarfile.TarInfo) -> None:
    for key, value in member.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        name = key[len("SCHILY.xattr.") :]
        if name.startswith(_SKIPPED_XATTR_PREFIXES):
            continue
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        try:
            os.setxattr(host, name, raw, follow_symlinks=False)
        except OSError:
            pass  # a file system without that namespace: the content still lands


__all__ = ["extract_tar", "is_tar_archive", "open_decompressed", "StagingWriter"]
