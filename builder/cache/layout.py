"""An OCI image layout on disk as a cache (`type=local`): read and written through dir fds.

The directory is the user's choice (it may itself be reached through a link), but nothing below
it is followed: `blobs`, `blobs/sha256` and every blob are opened with O_NOFOLLOW, so a link
planted in a cache directory (a CI system restores it from anywhere) never leads out of it.
Blobs are checked against their digest as they are read; files are written to a temp name in
their dir, fsynced and renamed, so a reader or a second writer never sees half a file.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from builder.image import oci
from builder.image.blobfiles import CHUNK, open_dir_nofollow

INDEX_LIMIT = 4 * 1024 * 1024
_FILE_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class LayoutError(Exception):
    """The layout cannot be read or written (missing, a link inside, not a layout, I/O)."""


class Layout:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- reading ---

    @contextmanager
    def _blob_dir(self, *, create: bool = False) -> Iterator[int]:
        try:
            if create:
                os.makedirs(self.path, exist_ok=True)
            top = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise LayoutError(f"cannot open {self.path}: {exc.strerror or exc}") from None
        fd = top
        try:
            for part in ("blobs", "sha256"):
                if create:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                try:
                    inner = open_dir_nofollow(part, fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise LayoutError(f"{self.path}/blobs/sha256 is a symbolic link or not a directory") from None
                    raise LayoutError(f"cannot open {self.path}/blobs/sha256: {exc.strerror}") from None
                if fd != top:
                    os.close(fd)
                fd = inner
            yield fd
        finally:
            if fd != top:
                os.close(fd)
            os.close(top)

    def read_index(self) -> dict:
        data = self._read_top("index.json", INDEX_LIMIT)
        try:
            index = json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise LayoutError(f"{self.path}/index.json is not JSON ({exc})") from None
        if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
            raise LayoutError(f"{self.path}/index.json is not an OCI image index")
        return index

    def _read_top(self, name: str, limit: int) -> bytes:
        try:
            top = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise LayoutError(f"cannot open {self.path}: {exc.strerror or exc}") from None
        try:
            fd = os.open(name, _FILE_NOFOLLOW, dir_fd=top)
        except OSError as exc:
            reason = "is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            raise LayoutError(f"cannot read {self.path}/{name}: {reason}") from None
        finally:
            os.close(top)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise LayoutError(f"{self.path}/{name} is not a regular file")
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise LayoutError(f"{self.path}/{name} is larger than {limit} bytes")
        return data

    def has_blob(self, digest: str) -> bool:
        try:
            with self._blob_dir() as blobs:
                st = os.stat(_hex(digest), dir_fd=blobs, follow_symlinks=False)
        except (LayoutError, OSError):
            return False
        return stat.S_ISREG(st.st_mode)

    @contextmanager
    def open_blob(self, digest: str) -> Iterator[BinaryIO]:
        """A blob's bytes as stored (the caller checks the digest as it reads; see read_blob)."""
        with self._blob_dir() as blobs:
            try:
                fd = os.open(_hex(digest), _FILE_NOFOLLOW, dir_fd=blobs)
            except OSError as exc:
                reason = "is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
                raise LayoutError(f"blob {digest} in {self.path}: {reason}") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise LayoutError(f"blob {digest} in {self.path} is not a regular file")
            yield handle

    def read_blob(self, digest: str, limit: int) -> bytes:
        """A small blob (manifest, config, record), whole, checked against its digest."""
        with self.open_blob(digest) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise LayoutError(f"blob {digest} in {self.path} is larger than {limit} bytes")
        if oci.sha256_digest(data) != digest:
            raise LayoutError(f"blob {digest} in {self.path} does not match its digest")
        return data

    # --- writing ---

    def write_blob(self, digest: str, fill: Callable[[BinaryIO], object]) -> None:
        """Put a blob unless present; `fill` writes its bytes."""
        with self._blob_dir(create=True) as blobs:
            try:
                st = os.stat(_hex(digest), dir_fd=blobs, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    return
            except FileNotFoundError:
                pass
            _atomic_at(blobs, _hex(digest), fill)

    def write_top(self, name: str, data: bytes) -> None:
        try:
            top = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise LayoutError(f"cannot open {self.path}: {exc.strerror or exc}") from None
        try:
            _atomic_at(top, name, lambda out: out.write(data))
        finally:
            os.close(top)


def _hex(digest: str) -> str:
    if not oci.is_digest(digest):
        raise LayoutError(f"unsupported digest {digest!r}")
    return digest.removeprefix("sha256:")


def _atomic_at(dir_fd: int, name: str, fill: Callable[[BinaryIO], object]) -> None:
    temp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    except OSError as exc:
        raise LayoutError(f"cannot write {name}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        # rename replaces whatever is at `name` (a planted link included) instead of following it
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def copy_stream(source: BinaryIO, out: BinaryIO) -> None:
    while chunk := source.read(CHUNK):
        out.write(chunk)
