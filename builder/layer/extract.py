"""Safe extraction of layers: into a layer dir (overlay-upper format) or onto a merged tree.

Every path is resolved component by component from a file descriptor of the target dir with
O_NOFOLLOW, so no symlink, earlier extracted or pre-existing, is ever followed and nothing can be
created outside the target. Hostile names (absolute, `..`) are refused with ArchiveError.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import ArchiveError
from builder.userns import in_user_namespace, is_overlay_xattr, opaque_xattr, owner_error

from .decompress import ByteSource
from .tarread import iter_tar, member_xattrs, split_member_name
from .tarwrite import BUILDER_XATTR_PREFIX, DEVICE_XATTR, OPAQUE_MARKER, WHITEOUT_PREFIX, device_marker

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)


@dataclass
class EntryMeta:
    """Ownership, permissions, time and xattrs to give an extracted entry."""

    mode: int
    uid: int
    gid: int
    mtime_ns: int | None
    xattrs: dict[str, bytes] = field(default_factory=dict)


def _display(parts: tuple[str, ...]) -> str:
    return "/".join(parts) or "."


class TreeWriter:
    """Creates entries under one root directory, never following symlinks.

    upper=True writes the overlay-upper format (whiteouts become 0/0 char devices, opaque markers
    the overlay opaque xattr, see builder.userns); upper=False applies onto a merged tree
    (whiteouts delete, opaque markers empty the directory of what earlier layers put there).
    keep_full_dirs=True is for a tree that is not ours (an export into a user's dir): an entry may
    replace a file, a link or an empty dir at its path, but never a directory that holds something.

    exact=True (the store) gives every entry its owner and trusted.* xattrs or fails naming the
    entry: a layer dir must be what the tar says. exact=False (an export into a user's dir) leaves
    entries owned by whoever runs the builder, as `tar x` does for an ordinary user.
    """

    def __init__(self, root: Path, *, upper: bool, keep_full_dirs: bool = False, exact: bool = True) -> None:
        self._upper = upper
        self._keep_full_dirs = keep_full_dirs
        self._exact = exact
        try:
            self._root_fd = os.open(root, _DIR_FLAGS)
        except OSError as err:
            raise ArchiveError(f"cannot open extraction target {root}: {err}") from err
        self._dir_meta: dict[tuple[str, ...], EntryMeta] = {}
        self._added: set[tuple[str, ...]] = set()  # paths this layer put in place

    def close(self) -> None:
        os.close(self._root_fd)

    # -- path resolution -------------------------------------------------------------------

    def open_dir(self, parts: tuple[str, ...], *, create: bool) -> int:
        """An fd of the directory at `parts` under the root; missing ones are made if `create`."""
        fd = os.dup(self._root_fd)
        try:
            for index, part in enumerate(parts):
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    os.chmod(next_fd, 0o755)  # whatever the umask
                except OSError as err:
                    if err.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise ArchiveError(
                            f"tar entry {_display(parts)!r} goes through "
                            f"{_display(parts[: index + 1])!r}, which is not a directory "
                            "(a symlink or file); refusing to follow it"
                        ) from err
                    raise
                os.close(fd)
                fd = next_fd
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _lstat(parent_fd: int, name: str) -> os.stat_result | None:
        try:
            return os.lstat(name, dir_fd=parent_fd)
        except FileNotFoundError:
            return None

    def _remove(self, parent_fd: int, name: str) -> None:
        st = self._lstat(parent_fd, name)
        if st is None:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=parent_fd)
        elif self._keep_full_dirs:
            try:
                os.rmdir(name, dir_fd=parent_fd)
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                raise ArchiveError(
                    f"{name!r} is a directory with files in the target; refusing to replace it"
                ) from err
        else:
            shutil.rmtree(name, dir_fd=parent_fd)

    # -- metadata -----------------------------------------------------------------------------

    def _chown(self, parts: tuple[str, ...], fd_or_name: int | str, uid: int, gid: int,
               parent_fd: int | None = None) -> None:
        if not self._exact:
            return  # the caller's ownership, whoever the tar names
        try:
            if parent_fd is None:
                os.chown(fd_or_name, uid, gid)
            else:
                os.chown(fd_or_name, uid, gid, dir_fd=parent_fd, follow_symlinks=False)
        except OSError as err:
            # EINVAL: an id the user namespace does not map; EPERM: not root at all. Either way
            # the entry cannot have its owner, and a layer dir with another owner would be wrong.
            if err.errno not in (errno.EINVAL, errno.EPERM):
                raise
            raise owner_error(f"layer entry {_display(parts)!r}", uid, gid, err) from err

    def _set_xattrs(self, parts: tuple[str, ...], target: int | str, xattrs: dict[str, bytes]) -> None:
        for key, value in xattrs.items():
            if is_overlay_xattr(key) or key.startswith(BUILDER_XATTR_PREFIX):
                continue  # overlay's and the builder's own state never comes from a tar
            try:
                if isinstance(target, int):
                    os.setxattr(target, key, value)
                else:
                    os.setxattr(target, key, value, follow_symlinks=False)
            except OSError as err:
                if err.errno == errno.EPERM and key.startswith("trusted.") and self._exact and in_user_namespace():
                    raise ArchiveError(
                        f"layer entry {_display(parts)!r} has the xattr {key}, which only root outside a user "
                        "namespace may set: a rootless build cannot keep it",
                        hint="build this image as root") from err
                # As Docker does: file systems without (user) xattrs, and symlinks, which
                # refuse user.* xattrs, lose them rather than failing the whole layer.
                if err.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise

    def _meta_on_fd(self, parts: tuple[str, ...], fd: int, meta: EntryMeta) -> None:
        # chown clears setuid bits and security.capability: it goes first.
        self._chown(parts, fd, meta.uid, meta.gid)
        self._set_xattrs(parts, fd, meta.xattrs)
        os.chmod(fd, meta.mode & 0o7777)
        if meta.mtime_ns is not None:
            os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))

    def _meta_at(self, parts: tuple[str, ...], parent_fd: int, meta: EntryMeta, *, symlink: bool) -> None:
        name = parts[-1]
        self._chown(parts, name, meta.uid, meta.gid, parent_fd)
        # /proc/self/fd/N resolves to the parent dir itself; the last component is not followed.
        self._set_xattrs(parts, f"/proc/self/fd/{parent_fd}/{name}", meta.xattrs)
        if not symlink:
            os.chmod(name, meta.mode & 0o7777, dir_fd=parent_fd)  # just made by us: not a link
        if meta.mtime_ns is not None:
            os.utime(
                name, ns=(meta.mtime_ns, meta.mtime_ns), dir_fd=parent_fd, follow_symlinks=False
            )

    # -- entries ------------------------------------------------------------------------------

    def _prepare(self, parts: tuple[str, ...], *, keep_dir: bool = False) -> int:
        """Parent fd of `parts`, with whatever was at `parts` removed (a dir kept if keep_dir)."""
        if not parts:
            raise ArchiveError("a tar entry names the root directory as a non-directory")
        parent_fd = self.open_dir(parts[:-1], create=True)
        try:
            st = self._lstat(parent_fd, parts[-1])
            if st is not None and not (keep_dir and stat.S_ISDIR(st.st_mode)):
                self._remove(parent_fd, parts[-1])
        except BaseException:
            os.close(parent_fd)
            raise
        self._added.add(parts)
        return parent_fd

    def add_dir(self, parts: tuple[str, ...], meta: EntryMeta) -> None:
        if not parts:
            return  # the root entry ("./"): the target's own metadata is the caller's
        parent_fd = self._prepare(parts, keep_dir=True)
        try:
            if self._lstat(parent_fd, parts[-1]) is None:
                os.mkdir(parts[-1], 0o700, dir_fd=parent_fd)
            fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
        try:
            self._chown(parts, fd, meta.uid, meta.gid)
            self._set_xattrs(parts, fd, meta.xattrs)
        finally:
            os.close(fd)
        # Mode and mtime at the end: adding children would change the mtime again.
        self._dir_meta[parts] = meta

    def add_file(self, parts: tuple[str, ...], meta: EntryMeta, content: ByteSource, size: int) -> None:
        parent_fd = self._prepare(parts)
        try:
            fd = os.open(
                parts[-1],
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=parent_fd,
            )
        finally:
            os.close(parent_fd)
        try:
            written = 0
            while written < size:
                chunk = content.read(min(_CHUNK, size - written))
                if not chunk:
                    raise ArchiveError(f"truncated tar archive: {_display(parts)!r} is short")
                if _is_zero(chunk):
                    os.lseek(fd, len(chunk), os.SEEK_CUR)  # leave a hole: sparse stays sparse
                else:
                    _write_all(fd, chunk)
                written += len(chunk)
            os.ftruncate(fd, size)
            self._meta_on_fd(parts, fd, meta)
        finally:
            os.close(fd)

    def add_symlink(self, parts: tuple[str, ...], meta: EntryMeta, target: str) -> None:
        parent_fd = self._prepare(parts)
        try:
            os.symlink(target, parts[-1], dir_fd=parent_fd)
            self._meta_at(parts, parent_fd, meta, symlink=True)
        finally:
            os.close(parent_fd)

    def add_node(self, parts: tuple[str, ...], meta: EntryMeta, kind: int, device: int) -> None:
        """A fifo (kind S_IFIFO) or a char/block device (S_IFCHR/S_IFBLK)."""
        parent_fd = self._prepare(parts)
        try:
            if kind == stat.S_IFIFO:
                os.mkfifo(parts[-1], 0o600, dir_fd=parent_fd)
            else:
                try:
                    os.mknod(parts[-1], kind | 0o600, device, dir_fd=parent_fd)
                except PermissionError:
                    if not (self._upper and in_user_namespace()):
                        raise
                    # Only whiteouts (0/0) may be made in a user namespace: a rootless store
                    # keeps the node as a marked empty file (see DEVICE_XATTR).
                    fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o600, dir_fd=parent_fd)
                    try:
                        os.setxattr(fd, DEVICE_XATTR, device_marker(kind, device))
                    finally:
                        os.close(fd)
            self._meta_at(parts, parent_fd, meta, symlink=False)
        finally:
            os.close(parent_fd)

    def add_hardlink(self, parts: tuple[str, ...], target: tuple[str, ...]) -> None:
        if not target:
            raise ArchiveError(f"hardlink {_display(parts)!r} points at the root directory")
        if target == parts:
            return
        try:
            target_parent = self.open_dir(target[:-1], create=False)
        except (FileNotFoundError, ArchiveError) as err:
            raise ArchiveError(
                f"hardlink {_display(parts)!r} points at {_display(target)!r}, "
                "which is not in the archive before it"
            ) from err
        try:
            st = self._lstat(target_parent, target[-1])
            if st is None or stat.S_ISDIR(st.st_mode):
                raise ArchiveError(
                    f"hardlink {_display(parts)!r} points at {_display(target)!r}, "
                    "which is not an extracted file"
                )
            parent_fd = self._prepare(parts)
            try:
                os.link(
                    target[-1], parts[-1],
                    src_dir_fd=target_parent, dst_dir_fd=parent_fd, follow_symlinks=False,
                )
            finally:
                os.close(parent_fd)
        finally:
            os.close(target_parent)

    def whiteout(self, parts: tuple[str, ...]) -> None:
        """`parts` was deleted by this layer."""
        if self._upper:
            parent_fd = self._prepare(parts)
            try:
                os.mknod(parts[-1], stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent_fd)
            finally:
                os.close(parent_fd)
            return
        try:
            parent_fd = self.open_dir(parts[:-1], create=False)
        except FileNotFoundError:
            return  # already absent
        except ArchiveError:
            return  # a parent is not a directory: nothing under it to delete
        try:
            self._remove(parent_fd, parts[-1])
        finally:
            os.close(parent_fd)

    def opaque(self, dir_parts: tuple[str, ...]) -> None:
        """The directory `dir_parts` hides everything earlier layers had in it."""
        if dir_parts and dir_parts not in self._added:
            parent_fd = self.open_dir(dir_parts[:-1], create=True)
            try:
                st = self._lstat(parent_fd, dir_parts[-1])
                if st is None or not stat.S_ISDIR(st.st_mode):
                    self._remove(parent_fd, dir_parts[-1])
                    os.mkdir(dir_parts[-1], 0o755, dir_fd=parent_fd)
                    os.chmod(dir_parts[-1], 0o755, dir_fd=parent_fd)  # whatever the umask
            finally:
                os.close(parent_fd)
        fd = self.open_dir(dir_parts, create=True)
        try:
            if self._upper:
                os.setxattr(fd, opaque_xattr(), b"y")
                return
            for name in os.listdir(fd):
                if dir_parts + (name,) not in self._added:
                    self._remove(fd, name)
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Directory modes and mtimes, now that nothing more is created inside them."""
        for parts, meta in self._dir_meta.items():
            try:
                fd = self.open_dir(parts, create=False)
            except (FileNotFoundError, ArchiveError):
                continue  # replaced or deleted by a later entry
            try:
                os.chmod(fd, meta.mode & 0o7777)
                if meta.mtime_ns is not None:
                    os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))
            finally:
                os.close(fd)


def _is_zero(chunk: bytes) -> bool:
    # Cheap rejection first: real data almost never starts and ends with NUL bytes.
    if chunk[0] or chunk[-1]:
        return False
    return chunk == (_ZEROS if len(chunk) == _CHUNK else bytes(len(chunk)))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _tar_meta(info: tarfile.TarInfo) -> EntryMeta:
    return EntryMeta(
        mode=info.mode,
        uid=info.uid,
        gid=info.gid,
        mtime_ns=int(info.mtime * 1_000_000_000),
        xattrs=member_xattrs(info),
    )


def _extract_member(target: TreeWriter, info: tarfile.TarInfo, content: ByteSource | None) -> None:
    parts = split_member_name(info.name)
    base = parts[-1] if parts else ""
    if base == OPAQUE_MARKER:
        target.opaque(parts[:-1])
        return
    if any(part.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX) for part in parts):
        return  # other `.wh..wh.` names are aufs bookkeeping (e.g. `.wh..wh..plnk/`): no content
    if base.startswith(WHITEOUT_PREFIX):
        name = base[len(WHITEOUT_PREFIX) :]
        if not name or name in (".", ".."):
            raise ArchiveError(f"invalid whiteout entry {info.name!r}")
        target.whiteout(parts[:-1] + (name,))
        return
    meta = _tar_meta(info)
    if info.isdir():
        target.add_dir(parts, meta)
    elif info.isreg():
        assert content is not None
        target.add_file(parts, meta, content, info.size)
    elif info.issym():
        target.add_symlink(parts, meta, info.linkname)
    elif info.islnk():
        target.add_hardlink(parts, split_member_name(info.linkname, what="hardlink target"))
    elif info.isfifo():
        target.add_node(parts, meta, stat.S_IFIFO, 0)
    elif info.ischr() or info.isblk():
        kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
        target.add_node(parts, meta, kind, os.makedev(info.devmajor, info.devminor))
    else:
        raise ArchiveError(f"tar entry {info.name!r} has an unsupported type {info.type!r}")


def _extract(stream: ByteSource, root: Path, *, upper: bool) -> None:
    target = TreeWriter(Path(root), upper=upper)
    try:
        for info, content in iter_tar(stream):
            try:
                _extract_member(target, info, content)
            except ArchiveError:
                raise
            except (OSError, ValueError) as err:
                raise ArchiveError(f"cannot extract tar entry {info.name!r}: {err}") from err
        try:
            target.finish()
        except OSError as err:
            raise ArchiveError(f"cannot set directory metadata in {root}: {err}") from err
    finally:
        target.close()


def unpack_layer(stream: ByteSource, dest_dir: Path) -> None:
    """Extract a (possibly compressed) layer tar into `dest_dir` in the overlay-upper format.

    `.wh.NAME` becomes a 0/0 char device NAME, `.wh..wh..opq` the overlay opaque xattr (=y) on
    its directory. Nothing is written outside dest_dir; hostile or corrupt input raises
    ArchiveError (dest_dir may then hold a partial extraction: extract into a temp dir).
    """
    _extract(stream, dest_dir, upper=True)


def apply_layer_stream(stream: ByteSource, merged_dir: Path) -> None:
    """Apply a (possibly compressed) layer tar onto a flattened tree: whiteouts delete, opaque
    markers empty the directory of earlier content, other entries replace what is there."""
    _extract(stream, merged_dir, upper=False)
