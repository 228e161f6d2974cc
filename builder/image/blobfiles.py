"""Blob files of the store: the hashing temp-file writer (which can also learn a layer's diff_id
on the way), and the file system helpers (fsync of dirs, syncfs, the checks
of the store's root and dirs, link-proof removal of trees) that keep writes atomic and walks
inside the store."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import itertools
import os
import queue
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from builder.errors import StoreError
from builder.image import oci
from builder.userns import describe_owner, in_user_namespace

CHUNK = 1 << 20
# A blob writer has the kernel start writing back every this many bytes (see start_writeback).
WRITEBACK_STEP = 8 << 20


class DigestMismatch(StoreError):
    """Content written for a blob does not hash to the digest it was announced with."""


class DiffIdMismatch(StoreError):
    """A config claims a diff_id for a layer blob whose uncompressed content hashes to another."""

    def __init__(self, blob_digest: str, claimed: str, actual: str) -> None:
        self.blob_digest, self.claimed, self.actual = blob_digest, claimed, actual
        super().__init__(
            f"layer {blob_digest}: the image config claims diff_id {claimed}, "
            f"but the layer's uncompressed content hashes to {actual}",
            hint="the image is corrupt or was crafted to pass one layer off as another; nothing of it was stored",
        )


# --- file system helpers -------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_libc = None


def _load_libc():  # noqa: ANN202 - a ctypes.CDLL, typed loosely to keep ctypes out of the imports
    global _libc
    if _libc is None:
        import ctypes  # only when something is published: a no-op build never loads it

        libc = ctypes.CDLL(None, use_errno=True)
        try:
            libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        except AttributeError:  # a libc without it: start_writeback does nothing
            pass
        _libc = libc
    return _libc


_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Have the kernel start writing a range of a file to disk now, without waiting for it
    (sync_file_range SYNC_FILE_RANGE_WRITE): the fsync that makes the file durable then finds
    little left to do. Only a head start: durability is still the fsync's, and a failing call
    (or a libc without it) changes nothing else. True when the kernel took the request."""
    call = getattr(_load_libc(), "sync_file_range", None)
    return call is not None and call(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0


def syncfs(path: Path) -> None:
    """Flush the whole file system holding `path` (one call instead of an fsync per unpacked file)."""
    libc = _load_libc()
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


# Dirs are opened one component at a time with O_NOFOLLOW: a symbolic link planted where the
# store keeps a dir (or anywhere inside a tree being removed) is never walked through.
_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Dirs deeper than this below a tree being removed are first moved up to its top, so neither the
# fds held open nor the recursion grow with the depth a hostile layer can reach.
_REMOVE_MAX_DEPTH = 48


def open_dir_nofollow(name: str | Path, dir_fd: int | None = None) -> int:
    return os.open(name, _DIR_NOFOLLOW, dir_fd=dir_fd)


def open_store_dir(root: Path, relpath: str) -> int:
    """An fd for the store's dir `relpath` (e.g. "blobs/sha256"), refusing a link or a non-dir
    at any component below `root` (the root itself is the user's choice and may be a link)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in relpath.split("/"):
            try:
                inner = open_dir_nofollow(part, fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise not_a_store_dir(root, relpath) from None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def store_dir(root: Path, relpath: str) -> Iterator[int]:
    fd = open_store_dir(root, relpath)
    try:
        yield fd
    finally:
        os.close(fd)


def not_a_store_dir(root: Path, relpath: str) -> StoreError:
    return StoreError(
        f"{root / relpath} is a symbolic link or not a directory; the store's own dirs must be real "
        "directories inside it",
        hint="someone may have tampered with the store: check where it points, then remove it "
             "(the builder recreates its dirs) or use another --root",
    )


def open_lock_file(path: Path) -> int:
    """Open (creating) a flock file in the store's locks dir; a link in its place is refused."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        hint = ("a symbolic link is in the store's locks dir: someone tampered with the store; remove it"
                if exc.errno == errno.ELOOP else None)
        raise StoreError(f"cannot open the lock file {path}: {exc.strerror}", hint=hint) from exc


def remove_tree(path: Path) -> None:
    """Remove a file or a tree (layer contents may hold read-only dirs); best effort, never
    follows a symbolic link out of the tree."""
    try:
        parent_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        remove_tree_at(parent_fd, path.name)
    finally:
        os.close(parent_fd)


def remove_tree_at(parent_fd: int, name: str) -> None:
    """Remove entry `name` of the dir open as `parent_fd`, walking by dir fds (a link is removed,
    never followed); errors are ignored, as a leftover in tmp/ is swept again later."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=parent_fd)
            return
        top_fd = _open_removable_dir(parent_fd, name, st)
    except OSError:
        return
    try:
        _empty_dir(top_fd)
    finally:
        os.close(top_fd)
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except OSError:
        pass


def _open_removable_dir(parent_fd: int, name: str, st: os.stat_result) -> int:
    """Open a dir of a tree being removed, making it readable and writable for us if needed
    (a layer may hold dirs of mode 0555 or 0000; root needs none of this)."""
    try:
        fd = open_dir_nofollow(name, parent_fd)
    except PermissionError:
        # Checked a moment ago to be a dir, not a link, in a tree only we write: chmod by name is safe.
        os.chmod(name, 0o700, dir_fd=parent_fd)
        fd = open_dir_nofollow(name, parent_fd)
    if st.st_mode & 0o700 != 0o700 and os.geteuid() != 0:
        try:
            os.fchmod(fd, 0o700)
        except OSError:
            pass
    return fd


def _empty_dir(top_fd: int) -> None:
    moved = itertools.count()
    previous: list[str] | None = None
    while True:
        try:
            names = sorted(os.listdir(top_fd))
        except OSError:
            return
        if not names or names == previous:  # done, or nothing more can be removed
            return
        previous = names
        for name in names:
            _remove_entry(top_fd, name, top_fd, 1, moved)


def _remove_entry(parent_fd: int, name: str, top_fd: int, depth: int, moved: Iterator[int]) -> None:
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=parent_fd)
            return
        if depth >= _REMOVE_MAX_DEPTH:
            # rename() does not follow links either; the top loop picks the dir up again.
            while True:
                new_name = f".deep-{next(moved)}"
                try:
                    os.stat(new_name, dir_fd=top_fd, follow_symlinks=False)
                except FileNotFoundError:
                    break
            os.rename(name, new_name, src_dir_fd=parent_fd, dst_dir_fd=top_fd)
            return
        fd = _open_removable_dir(parent_fd, name, st)
    except OSError:
        return
    try:
        for child in os.listdir(fd):
            _remove_entry(fd, child, top_fd, depth + 1, moved)
    except OSError:
        pass
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except OSError:
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


def prepare_root(root: Path) -> None:
    """Create the store root 0700, or check an existing one is ours and not writable by others.

    Snapshot dirs hold image contents as they are (setuid binaries, device nodes), so no other
    local user may reach them: the root is 0700 (Docker's fix for CVE-2021-41091). A root from an
    older builder (0755) is tightened; one owned by another user or writable by group or others
    is refused, as someone else could have planted anything in it. The parents of the root are
    the user's business."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(root, 0o700)
        except FileExistsError:
            pass
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StoreError(f"cannot create the store at {root}: {exc.strerror}",
                         hint="set BUILDER_ROOT (or --root) to a writable directory") from exc
    try:
        st = os.fstat(fd)
        euid = os.geteuid()
        if st.st_uid != euid and in_user_namespace():
            raise StoreError(
                f"the store root {root} belongs to {describe_owner(st.st_uid)}, not to you",
                hint="use a root of your own (--root or BUILDER_ROOT): a rootless builder can use neither root's "
                     "store nor another user's")
        if st.st_uid != euid:
            raise StoreError(
                f"the store root {root} belongs to uid {st.st_uid}, not to you (uid {euid})",
                hint=f"use a root of your own (--root or BUILDER_ROOT), or if it is yours: chown -R {euid} {root}")
        if st.st_mode & 0o022:
            raise StoreError(
                f"the store root {root} is writable by {'others' if st.st_mode & 0o002 else 'its group'} "
                f"(mode {stat.S_IMODE(st.st_mode):04o})",
                hint=f"check nothing foreign was put in it, then chmod 700 {root}; or use another --root")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o700)  # a store made by an older builder: close it to other users
    except OSError as exc:
        raise StoreError(f"cannot check the store root {root}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def check_store_entry(root: Path, relpath: str, *, directory: bool) -> bool:
    """Whether the store's own entry `relpath` exists; refuses a link, a wrong type, or another
    owner (only our own process ever makes them)."""
    path = root / relpath
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or (directory and not stat.S_ISDIR(st.st_mode)) \
            or (not directory and not stat.S_ISREG(st.st_mode)):
        if directory:
            raise not_a_store_dir(root, relpath)
        raise StoreError(f"{path} is a symbolic link or not a regular file",
                         hint="someone may have tampered with the store: check it, then remove the entry")
    if st.st_uid != os.geteuid() and in_user_namespace():
        raise StoreError(f"{path} belongs to {describe_owner(st.st_uid)}, not to you",
                         hint=f"check nothing foreign was put in the store, then: builder unshare chown -R 0:0 {root}")
    if st.st_uid != os.geteuid():
        raise StoreError(f"{path} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()})",
                         hint=f"check nothing foreign was put in the store, then chown -R {os.geteuid()} {root}")
    return True


# --- blob writer ---------------------------------------------------------------------------------


class _QueueReader(io.RawIOBase):
    """The read side of UncompressedDigest's queue: chunks until the empty end marker."""

    def __init__(self, chunks: "queue.Queue[bytes]") -> None:
        super().__init__()
        self._chunks = chunks
        self._current = memoryview(b"")
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001
        while not self._current and not self._ended:
            chunk = self._chunks.get()
            if not chunk:
                self._ended = True
            self._current = memoryview(chunk)
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._current))
        view[:n] = self._current[:n]
        self._current = self._current[n:]
        return n

    def drain(self) -> None:
        while not self._ended:
            self._ended = not self._chunks.get()


class UncompressedDigest:
    """The diff_id of a layer blob, learnt while the blob's compressed bytes are written: one pass.

    The bytes fed in go through a small queue to a helper thread that decompresses them with the
    reader unpacking uses (format by magic bytes, zstd fed in bounded pieces) and hashes the
    output, beside the writer's own hashing and disk writes. A blob that does not decompress gets
    no diff_id (`error` says why) rather than failing the write: its digest is still right, and
    whoever wants it as a layer reports the error."""

    def __init__(self) -> None:
        from builder.layer.decompress import open_layer_stream

        self._open_layer_stream = open_layer_stream
        self._chunks: queue.Queue[bytes] = queue.Queue(maxsize=4)
        self.diff_id: str | None = None
        self.diff_size = 0  # bytes of the uncompressed content
        self.error: str | None = None
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="diff-id", daemon=True)
        self._thread.start()

    def feed(self, data: bytes) -> None:
        if data and not self._ended:
            self._chunks.put(data)

    def finish(self) -> str | None:
        """All bytes fed: the diff_id, or None when they are not a layer (see `error`)."""
        if not self._ended:
            self._ended = True
            self._chunks.put(b"")
            self._thread.join()
        return self.diff_id

    def _run(self) -> None:
        source = _QueueReader(self._chunks)
        try:
            stream = self._open_layer_stream(source)
            hasher = hashlib.sha256()
            size = 0
            while chunk := stream.read(CHUNK):
                hasher.update(chunk)
                size += len(chunk)
            self.diff_id, self.diff_size = "sha256:" + hasher.hexdigest(), size
        except Exception as exc:  # noqa: BLE001 - any decoding failure means "not a layer"
            self.error = str(exc) or type(exc).__name__
        finally:
            source.drain()  # keep taking chunks, so the writer never blocks on a full queue


class BlobWriter(io.RawIOBase):
    """A write-only file that hashes what it is given; published by `Store.blob_writer` on success.

    With `layer=True` it also hashes the decompressed content as it goes: `diff_id` is set by
    `finish()` (None when the bytes do not decompress; `layer_error` says why)."""

    def __init__(self, tmp_dir: Path, expected_digest: str | None, *, layer: bool = False) -> None:
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
        self.diff_id: str | None = None
        self.diff_size: int | None = None
        self.layer_error: str | None = None
        self._buffer = bytearray()
        self._uncompressed = UncompressedDigest() if layer else None
        self._on_disk = 0  # bytes written to the temp file
        self._flushed = 0  # of which the kernel was asked to start writing back

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        with memoryview(data) as raw, raw.cast("B") as view:
            n = len(view)
            self._hash.update(view)
            if n >= CHUNK and not self._buffer and self._uncompressed is None:
                self._write_out(view)  # large enough on its own: no copy through the buffer
            else:
                self._buffer += view
        self.size += n
        if len(self._buffer) >= CHUNK:
            self._drain()
        return n

    def tell(self) -> int:
        return self.size

    def _drain(self) -> None:
        if self._uncompressed is not None and self._buffer:
            self._uncompressed.feed(bytes(self._buffer))
        with memoryview(self._buffer) as whole:
            self._write_out(whole)
        self._buffer.clear()

    def _write_out(self, data: memoryview) -> None:
        try:
            view = data
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            raise io_error(exc, "cannot write a blob", self.temp_path.parent.parent) from exc
        self._on_disk += len(data)
        if self._on_disk - self._flushed >= WRITEBACK_STEP:
            # The disk writes what came so far while more is being made: finish()'s fsync then
            # waits for the last few MiB only, not for the whole blob.
            start_writeback(self._fd, self._flushed, self._on_disk - self._flushed)
            self._flushed = self._on_disk

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
        if self._uncompressed is not None:
            self.diff_id = self._uncompressed.finish()
            self.diff_size = self._uncompressed.diff_size if self.diff_id else None
            self.layer_error = self._uncompressed.error
        return self.digest

    def discard(self) -> None:
        if self._uncompressed is not None:
            self._uncompressed.finish()
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


def copy_into(data: bytes | bytearray | memoryview | BinaryIO | Iterable[bytes], writer: BlobWriter) -> None:
    if isinstance(data, (bytes, bytearray, memoryview)):
        writer.write(data)
    elif hasattr(data, "read"):
        while chunk := data.read(CHUNK):
            writer.write(chunk)
    else:
        for chunk in data:
            writer.write(chunk)


class HashingReader(io.RawIOBase):
    """Passes a stream through while hashing (and counting) everything read from it."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self._inner = inner
        self._hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._hash.update(data)
        self.size += len(data)
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
