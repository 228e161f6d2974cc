"""Blob files of the store: the hashing temp-file writer, staged publication, and the file
system helpers (fsync of dirs, syncfs, removal of read-only trees) that make writes atomic."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterable, Iterator

from builder.errors import StoreError
from builder.image import oci

if TYPE_CHECKING:
    from builder.image.store import Store

CHUNK = 1 << 20


class DigestMismatch(StoreError):
    """Content written for a blob does not hash to the digest it was announced with."""


# --- file system helpers -------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_libc = None


def syncfs(path: Path) -> None:
    """Flush the whole file system holding `path` (one call instead of an fsync per unpacked file)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove a tree that may hold read-only dirs (layer contents keep their modes)."""
    def onerror(func, p, exc_info):  # noqa: ANN001 - shutil's callback signature
        try:
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        except OSError:
            pass
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=onerror)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def io_error(exc: OSError, what: str, root: Path | None = None) -> StoreError:
    """A StoreError for a failed store write, with the hint that usually fixes it."""
    hint = None
    if exc.errno == errno.ENOSPC:
        hint = "the disk is full: free space, or prune the store"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "the store is not writable; set BUILDER_ROOT to a writable directory"
    where = f" in {root}" if root else ""
    return StoreError(f"{what}{where}: {exc.strerror or exc}", hint=hint)


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not oci.is_digest(digest):
        raise StoreError(f"invalid blob digest {digest!r}", hint="digests look like sha256:<64 lowercase hex>")
    return digest


def default_root() -> Path:
    """$BUILDER_ROOT, else $XDG_DATA_HOME/builder, else ~/.local/share/builder."""
    if os.environ.get("BUILDER_ROOT"):
        return Path(os.environ["BUILDER_ROOT"])
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"]) / "builder"
    return Path.home() / ".local" / "share" / "builder"


# --- blob writer ---------------------------------------------------------------------------------


class BlobWriter(io.RawIOBase):
    """A write-only file that hashes what it is given; published by `Store.blob_writer` on success."""

    def __init__(self, tmp_dir: Path, expected_digest: str | None) -> None:
        super().__init__()
        try:
            fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="blob-")
        except OSError as exc:
            raise io_error(exc, "cannot create a temp file", tmp_dir.parent) from exc
        fcntl.flock(fd, fcntl.LOCK_EX)  # tells gc a live writer owns this temp file
        self.temp_path = Path(name)
        self._fd = fd
        self._hash = hashlib.sha256()
        self.expected_digest = expected_digest
        self.size = 0
        self.digest: str | None = None
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        with memoryview(data) as raw, raw.cast("B") as view:
            n = len(view)
            self._hash.update(view)
            self._buffer += view
        self.size += n
        if len(self._buffer) >= CHUNK:
            self._drain()
        return n

    def tell(self) -> int:
        return self.size

    def _drain(self) -> None:
        try:
            with memoryview(self._buffer) as whole:
                view = whole
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                view.release()
        except OSError as exc:
            raise io_error(exc, "cannot write a blob", self.temp_path.parent.parent) from exc
        self._buffer.clear()

    def finish(self) -> str:
        """Flush and fsync the temp file; check the digest. Returns the digest."""
        self._drain()
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise io_error(exc, "cannot write a blob", self.temp_path.parent.parent) from exc
        self.digest = "sha256:" + self._hash.hexdigest()
        if self.expected_digest is not None and self.digest != self.expected_digest:
            raise DigestMismatch(
                f"content does not match its digest: expected {self.expected_digest}, got {self.digest}",
                hint="the source is corrupt or was modified while it was read",
            )
        return self.digest

    def discard(self) -> None:
        self.release()
        try:
            self.temp_path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:  # closing the file object a library wraps us in must not publish
        pass


class Staging:
    """Blobs written but not yet visible; `publish()` renames them all into place at once.

    Used by importers: an archive is verified completely before any of its blobs appears.
    """

    def __init__(self, store: "Store") -> None:
        self._store = store
        self._pending: list[BlobWriter] = []

    @contextmanager
    def blob_writer(self, expected_digest: str | None = None) -> Iterator[BlobWriter]:
        writer = BlobWriter(self._store.tmp_dir, expected_digest)
        try:
            yield writer
            writer.finish()
        except BaseException:
            writer.discard()
            raise
        self._pending.append(writer)

    def put_blob(self, data: bytes | BinaryIO | Iterable[bytes], expected_digest: str | None = None) -> tuple[str, int]:
        with self.blob_writer(expected_digest) as writer:
            copy_into(data, writer)
        assert writer.digest is not None
        return writer.digest, writer.size

    def path_of(self, digest: str) -> Path:
        """Where a staged (or already published) blob can be read before publish."""
        for writer in self._pending:
            if writer.digest == digest:
                return writer.temp_path
        return self._store.blob_path(digest)

    def publish(self) -> None:
        for writer in self._pending:
            self._store._publish(writer)
        if self._pending:
            fsync_dir(self._store.blobs_dir)
        self._pending.clear()

    def discard(self) -> None:
        for writer in self._pending:
            writer.discard()
        self._pending.clear()


def copy_into(data: bytes | bytearray | memoryview | BinaryIO | Iterable[bytes], writer: BlobWriter) -> None:
    if isinstance(data, (bytes, bytearray, memoryview)):
        writer.write(data)
    elif hasattr(data, "read"):
        while chunk := data.read(CHUNK):  # type: ignore[union-attr]
            writer.write(chunk)
    else:
        for chunk in data:
            writer.write(chunk)


class StagingContext:
    def __init__(self, store: Store) -> None:
        self._staging = Staging(store)

    def __enter__(self) -> Staging:
        return self._staging

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        # Anything not published (error, or the caller never called publish) is thrown away.
        self._staging.discard()


class HashingReader(io.RawIOBase):
    """Passes a stream through while hashing everything read from it."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self._inner = inner
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._hash.update(data)
        return data

    def readinto(self, buffer) -> int:  # noqa: ANN001
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
