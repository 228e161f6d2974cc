"""Deterministic archive writing for exports: sorted entries, fixed mtime, numeric root owner.

Entries are planned first (name + where the bytes come from) and written sorted by name, so the
archive's bytes depend only on its contents. File contents are streamed, never held whole.
"""
from __future__ import annotations

import errno
import io
import os
import tarfile
import tempfile
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from builder.errors import OutputError
from builder.progress import Transfer

_CHUNK = 1 << 20
_MOVE = 64 << 20


class CountingWriter(io.RawIOBase):
    """Wraps an output (a file or stdout) so tarfile can ask for its position; a `transfer`
    is told the bytes as they go."""

    def __init__(self, out: BinaryIO, transfer: Transfer | None = None) -> None:
        super().__init__()
        self._out = out
        self.count = 0
        self.transfer = transfer

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        n = len(data)
        self._out.write(data)
        self.counted(n)
        return n

    def counted(self, n: int) -> None:
        """`n` more bytes reached the output (written here or moved by the kernel)."""
        self.count += n
        if self.transfer is not None:
            self.transfer.advance(n)

    def tell(self) -> int:
        return self.count

    def flush(self) -> None:
        self._out.flush()


@dataclass
class _Entry:
    name: str
    kind: str  # "dir", "file"
    size: int = 0
    opener: Callable[[], AbstractContextManager[BinaryIO]] | None = None
    data: bytes | None = None
    path: Path | None = None  # a file on disk, copied by the kernel where it can


class TarPlan:
    """Collects entries, then writes them sorted. Parent dirs are added automatically."""

    def __init__(self, *, mtime: int = 0) -> None:
        self._entries: dict[str, _Entry] = {}
        self.mtime = mtime

    def _add_parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            self._entries.setdefault(parent, _Entry(parent, "dir"))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._add_parents(name)
        self._entries[name] = _Entry(name, "file", len(data), data=data)

    def add_file(self, name: str, size: int, opener: Callable[[], AbstractContextManager[BinaryIO]]) -> None:
        """`opener` is called at write time and must give exactly `size` bytes."""
        self._add_parents(name)
        self._entries[name] = _Entry(name, "file", size, opener=opener)

    def add_path(self, name: str, path: Path) -> None:
        """A file on disk (a store blob): its bytes are copied by the kernel into a file output."""
        self._add_parents(name)
        self._entries[name] = _Entry(name, "file", os.stat(path).st_size, path=Path(path))

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def write(self, out: BinaryIO, transfer: Transfer | None = None) -> None:
        """The archive, byte for byte what tarfile writes (PAX headers, 512-byte blocks, two zero
        blocks, padded to a 10 KiB record), but file data from disk is copied by the kernel.
        `transfer` learns the archive's size first, then the bytes as they are written."""
        entries = [self._entries[name] for name in sorted(self._entries)]
        tar = TarWriter(out, mtime=self.mtime, transfer=transfer)
        if transfer is not None:
            size = sum(len(tar.header(entry.name, entry.kind, entry.size)) + entry.size + -entry.size % BLOCK
                       for entry in entries)
            size += BLOCK * 2
            transfer.total = size + -size % tarfile.RECORDSIZE
        for entry in entries:
            if entry.kind == "dir":
                tar.add_dir(entry.name)
            elif entry.data is not None:
                tar.add_bytes(entry.name, entry.data)
            elif entry.path is not None:
                tar.add_path(entry.name, entry.path, entry.size)
            else:
                assert entry.opener is not None
                with entry.opener() as stream:
                    tar.add_stream(entry.name, entry.size, stream)
        tar.close()


BLOCK = tarfile.BLOCKSIZE


class TarWriter:
    """Writes an archive's entries in the order they are given, each as tarfile would write it
    (PAX format, root owner, fixed mtime); `close()` ends it with two zero blocks and pads it to
    a 10 KiB record. File data on disk is copied by the kernel where the output allows."""

    def __init__(self, out: BinaryIO, *, mtime: int = 0, transfer: Transfer | None = None) -> None:
        self._out = out
        self.mtime = mtime
        self.sink = CountingWriter(out, transfer)

    def header(self, name: str, kind: str, size: int = 0) -> bytes:
        info = tarfile.TarInfo(name)
        info.mtime = self.mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if kind == "dir":
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
        else:
            info.type = tarfile.REGTYPE
            info.mode = 0o644
            info.size = size
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    def add_dir(self, name: str) -> None:
        self.sink.write(self.header(name, "dir"))

    def add_bytes(self, name: str, data: bytes) -> None:
        self.sink.write(self.header(name, "file", len(data)) + data + tarfile.NUL * (-len(data) % BLOCK))

    def add_path(self, name: str, path: Path, size: int) -> None:
        """`size` bytes of the file at `path` (a store blob)."""
        self.sink.write(self.header(name, "file", size))
        self.sink.flush()
        _copy_path(path, size, self._out, self.sink)
        self.sink.write(tarfile.NUL * (-size % BLOCK))

    def add_stream(self, name: str, size: int, stream: BinaryIO) -> None:
        self.sink.write(self.header(name, "file", size))
        _copy_stream(stream, size, self.sink, name)
        self.sink.write(tarfile.NUL * (-size % BLOCK))

    def begin_streamed(self) -> StreamedMember:
        """A file member whose name and size are known only once its bytes are written (see
        StreamedMember). The output must be a regular file."""
        return StreamedMember(self)

    def close(self) -> None:
        self.sink.write(tarfile.NUL * (BLOCK * 2))
        self.sink.write(tarfile.NUL * (-self.sink.count % tarfile.RECORDSIZE))
        self.sink.flush()


class StreamedMember:
    """A member written before its name and size are known (a blob, named by its digest, while
    it is made): a placeholder block first, then the bytes straight into the output file as they
    come, then its header written over the placeholder by `finish`. So the bytes reach the output
    once, with no copy from elsewhere afterwards.

    `write` may be called from another thread while the writer is otherwise idle."""

    def __init__(self, tar: TarWriter) -> None:
        self._tar = tar
        tar.sink.flush()
        try:
            self._fd = tar._out.fileno()
            self._header_at = os.lseek(self._fd, 0, os.SEEK_CUR)
        except (AttributeError, OSError, io.UnsupportedOperation) as exc:
            raise ValueError("a streamed member needs a regular file as the output") from exc
        tar.sink.write(tarfile.NUL * BLOCK)
        tar.sink.flush()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        try:
            with memoryview(data) as view:
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
        except OSError as exc:
            raise OutputError(f"cannot write the output: {exc.strerror or exc}") from exc
        self.size += len(data)
        self._tar.sink.counted(len(data))
        return len(data)

    def restart(self) -> None:
        """Drop what was written since the placeholder: the bytes come again from the start."""
        self._cut(self._header_at + BLOCK)
        self.size = 0

    def finish(self, name: str) -> bool:
        """Write the header over the placeholder and pad the data. False, with the member cut
        off (the output as it was before it), when its header needs more than one block (a blob
        of 8 GiB or more): the caller then writes it as a plain member."""
        header = self._tar.header(name, "file", self.size)
        if len(header) != BLOCK:
            self.drop()
            return False
        try:
            os.pwrite(self._fd, header, self._header_at)
        except OSError as exc:
            raise OutputError(f"cannot write the output: {exc.strerror or exc}") from exc
        self._tar.sink.write(tarfile.NUL * (-self.size % BLOCK))
        return True

    def drop(self) -> None:
        """Cut the member off: the output is as it was before it began."""
        self._cut(self._header_at)

    def _cut(self, offset: int) -> None:
        end = os.lseek(self._fd, 0, os.SEEK_CUR)
        os.ftruncate(self._fd, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)
        sink = self._tar.sink
        sink.count -= end - offset
        if sink.transfer is not None:
            sink.transfer.restart(sink.count)


def _copy_stream(stream: BinaryIO, size: int, sink: "CountingWriter", name: str) -> None:
    left = size
    while left:
        chunk = stream.read(min(_CHUNK, left))
        if not chunk:
            raise OutputError(f"{name} ended {left} bytes short of its {size} while it was written")
        sink.write(chunk)
        left -= len(chunk)


def _copy_path(path: Path, size: int, out: BinaryIO, sink: "CountingWriter") -> None:
    """`size` bytes of the file at `path` into `out`, past the sink's count: copy_file_range into
    a file, sendfile into a pipe, plain reads and writes where neither works."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        left = size
        try:
            out_fd = out.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            out_fd = -1
        for mover in (os.copy_file_range, os.sendfile):
            if out_fd < 0 or not left:
                break
            try:
                while left and (moved := _move(mover, fd, out_fd, left)):
                    left -= moved
                    sink.counted(moved)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                    raise
        os.lseek(fd, size - left, os.SEEK_SET)
        while left:
            chunk = os.read(fd, min(_CHUNK, left))
            if not chunk:
                raise OutputError(f"{path} ended {left} bytes short of its {size} while it was written")
            sink.write(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)


def _move(mover: Callable[..., int], fd: int, out_fd: int, count: int) -> int:
    # 64 MiB a call: a few calls per GiB cost nothing, and progress moves on between them.
    if mover is os.sendfile:
        return os.sendfile(out_fd, fd, None, min(count, _MOVE))
    return os.copy_file_range(fd, out_fd, min(count, _MOVE))


@contextmanager
def atomic_output_file(dest: Path | str) -> Iterator[BinaryIO]:
    """Write `dest` via a temp file beside it, renamed into place on success; "-" is stdout."""
    if str(dest) == "-":
        import sys

        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    path = Path(dest)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"output {path} is a directory, but a file is to be written there",
                          hint="give a file name, e.g. dest=image.tar")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write output {path}: {exc.strerror}") from exc
    tmp = Path(tmp_name)
    try:
        # No fsync: this is the user's file, not the store; like cp, tar or `docker save` we
        # leave flushing it to the kernel (the rename still hides a half-written file from readers).
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
