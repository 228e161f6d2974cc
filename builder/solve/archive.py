"""ADD's local-archive rule: a tar (plain, gzip, bzip2, xz or zstd, recognised by its bytes, never
by its name) is unpacked into the destination directory; anything else is copied as a file.

Docker decides "is an archive" by decompressing and asking a tar reader for the first header; a
compressed file that does not hold a tar, or an empty tar, is copied as it is. Docker extracts
chrooted into the destination, and so does this, without a chroot: every entry's path is cleaned
(a leading `/` dropped, `..` stopping at the destination), symlinks on its way (made by this
archive, or in the image) are resolved with the destination as their root, an entry naming the
destination itself (`./`, an empty name) is skipped. What Docker refuses stays refused: a path
through a symlink whose target is missing, a hard link to something the archive did not write.
Nothing is ever written outside the destination, and no host path is ever followed.
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
from builder.snapshot.view import split_path
from builder.userns import OVERLAY_XATTR_PREFIXES, check_owner

_COPY_BUFFER = 1 << 20
_MAX_LINK_HOPS = 40
_SKIPPED_XATTR_PREFIXES = OVERLAY_XATTR_PREFIXES

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

    def is_dir(self, image_path: str) -> bool: ...

    def remove_dir(self, image_path: str) -> None: ...

    def node(self, image_path: str) -> tuple[str, str | None] | None: ...


def entry_parts(raw: str) -> list[str]:
    """An entry name as Docker's untar, chrooted into the destination, sees it: cleaned, a
    leading `/` dropped, `..` stopping at the destination (`../x` and `/x` both name `dest/x`).
    Empty for the destination itself (`""`, `.`, `./`, `..`)."""
    return list(split_path(raw))


class _Resolver:
    """Entry paths resolved inside the destination as if it were the root, as Docker extracts an
    ADD archive (chrooted into the destination): symlinks on the way, this archive's or the
    image's, are followed, an absolute target starts again at the destination and `..` never
    climbs above it. Links are read from the staging tree or the image, never from the host,
    and every path this returns is below the destination."""

    def __init__(self, staging: StagingWriter, dest_dir: str, archive: str, pos: Pos | None) -> None:
        self.staging = staging
        self.base = [part for part in dest_dir.split("/") if part]
        self.archive = archive
        self.pos = pos

    def error(self, message: str, hint: str = "Docker fails on this entry too; fix the archive") -> ArchiveError:
        return ArchiveError(f'archive "{self.archive}": {message}', pos=self.pos, hint=hint)

    def parent(self, parts: list[str], raw: str) -> str:
        """The image path of the directory that holds the entry `parts`; its last component is
        never followed (a link there is replaced). Missing directories on the way are the
        caller's to create; a symlink on the way whose target is missing is an error, as in
        Docker (it creates missing dirs, never a link's missing target)."""
        current = list(self.base)
        queue: list[tuple[str, bool]] = [(part, False) for part in parts[:-1]]
        hops = 0
        missing = False
        while queue:
            name, from_link = queue.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if len(current) > len(self.base):
                    current.pop()
                continue
            path = "/" + "/".join([*current, name])
            node = None if missing else self.staging.node(path)
            if node is None:
                if from_link:
                    raise self.error(f'entry "{raw}" goes through a symlink whose target "{path}" does not exist')
                missing = True  # from here on, every component is a directory to create
                current.append(name)
                continue
            kind, target = node
            if kind == "link" and target is not None:
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise self.error(f'entry "{raw}": too many levels of symbolic links')
                if target.startswith("/"):
                    current = list(self.base)
                queue = [(part, True) for part in target.split("/")] + queue
                continue
            if kind != "dir":
                raise self.error(f'entry "{raw}" needs "{path}" to be a directory')
            current.append(name)
        return "/" + "/".join(current)

    def path(self, parts: list[str], raw: str) -> str:
        return posixpath.join(self.parent(parts, raw), parts[-1])


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
    resolver = _Resolver(staging, dest_dir, archive, pos)
    extracted: set[str] = set()
    try:
        with open(path, "rb") as raw:
            stream = open_decompressed(raw)
            with tarfile.open(fileobj=stream, mode="r|", errorlevel=2) as tar:
                for member in tar:
                    _extract_member(tar, member, staging, resolver, chown, extracted)
    except ArchiveError as exc:
        if exc.pos is not None or f'"{archive}"' in exc.message:
            raise
        # a decoder failure from the layer reader: say which ADD source it was
        raise ArchiveError(f'archive "{archive}": {exc.message}', pos=pos, hint=exc.hint) from None
    except (tarfile.TarError, EOFError) as exc:
        raise ArchiveError(f'archive "{archive}" is corrupt: {exc}', pos=pos) from None
    except ValueError as exc:  # the staging tree refused a path
        raise ArchiveError(f'archive "{archive}": {exc}', pos=pos, hint="the archive is unsafe to extract") from None


def _extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    staging: StagingWriter,
    resolver: _Resolver,
    chown: tuple[int, int] | None,
    extracted: set[str],
) -> None:
    parts = entry_parts(member.name)
    if not parts:
        return  # the destination itself (`./`, an empty name): Docker skips it, whatever its type
    image_path = resolver.path(parts, member.name)
    uid, gid = chown if chown is not None else (member.uid, member.gid)
    check_owner(image_path, uid, gid, pos=resolver.pos)  # rootless: an owner the namespace lacks is an error
    mode = member.mode & 0o7777
    mtime_ns = int(member.mtime) * 1_000_000_000
    staging.ensure_dir(posixpath.dirname(image_path))

    if member.isdir():
        host = staging.prepare_target(image_path, replace_dir=False)
        if not host.is_dir():
            os.mkdir(host, 0o700)
        os.chown(host, uid, gid)
        os.chmod(host, mode)
        _apply_xattrs(host, member)
        staging.set_dir_meta(image_path, mode, uid, gid, mtime_ns)
        staging.record(image_path)
        extracted.add(image_path)
        return

    if staging.is_dir(image_path):
        # Docker's untar removes whatever is in the way of a non-directory, a directory too.
        staging.remove_dir(image_path)
        inside = image_path + "/"
        extracted.difference_update({p for p in extracted if p == image_path or p.startswith(inside)})
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
        _hard_link(staging, resolver, member, host, extracted)
        staging.record(image_path)
        extracted.add(image_path)
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
    extracted.add(image_path)


def _hard_link(staging: StagingWriter, resolver: _Resolver, member: tarfile.TarInfo, host: Path,
               extracted: set[str]) -> None:
    """A hard link's target is resolved inside the destination like an entry's path, and must be
    a non-directory this archive wrote (files of the image below are never linked to)."""
    parts = entry_parts(member.linkname)
    target = resolver.path(parts, member.linkname) if parts else None
    if target is None or target not in extracted:
        raise resolver.error(
            f'hard link "{member.name}" points to "{member.linkname}",'
            " which is not an earlier entry of the archive",
            hint="hard links in an ADD archive may only join entries of the same archive",
        )
    target_host = staging.host_path(target)
    if stat.S_ISDIR(os.lstat(target_host).st_mode):
        raise resolver.error(f'hard link "{member.name}" to a directory')
    os.link(target_host, host, follow_symlinks=False)


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


__all__ = ["entry_parts", "extract_tar", "is_tar_archive", "open_decompressed", "StagingWriter"]
