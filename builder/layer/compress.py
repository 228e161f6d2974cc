"""Deterministic, streaming compressors for layer blobs.

The bytes produced depend only on the data, the algorithm and the level: never on the thread
count, the size of the writes, the time or the machine (for a given zlib/libzstd version).

gzip uses the pigz technique: the input is cut into fixed-size blocks, each block is deflated
independently (raw deflate, primed with the previous block's last 32 KiB as dictionary) in a
thread pool, non-final blocks end with a sync flush so the pieces concatenate into one deflate
stream, and one gzip header (no name, mtime 0, fixed OS byte) and trailer (crc32, size) wrap it.
zlib releases the GIL while deflating, so threads give real parallelism.
"""
from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeAlias

import zstandard

GZIP_BLOCK_SIZE = 1 << 20
_DEFLATE_WINDOW = 32 * 1024
DEFAULT_LEVELS = {"gzip": 6, "zstd": 3}
# zstd: small writes are gathered up to _ZSTD_CHUNK per call into libzstd (a call per small
# file would cost more than its bytes); a piece of _ZSTD_DIRECT or more goes in as it is. The
# output does not depend on these cuts; _ZSTD_CHUNK is also the size of its output pieces.
_ZSTD_CHUNK = 1 << 20
_ZSTD_DIRECT = 256 << 10
# gzip header OS byte: 255 ("unknown"), as Go's compress/gzip writes; fixed for determinism.
_GZIP_OS_UNKNOWN = 255


# What the layer writers hand on: bytes, or a view of a reused buffer (the tar writer's file copies).
BytesLike: TypeAlias = bytes | bytearray | memoryview


class ByteSink(Protocol):
    """All the layer writers need of their output: a file, a store blob writer or another sink."""

    def write(self, data: BytesLike) -> int: ...


class OutputWriteError(Exception):
    """Writing to the caller's `out` failed (e.g. disk full); `error` is the original OSError.

    Kept apart from errors reading the source dir, so write_layer can re-raise it unchanged for
    the caller (the store) to report as its own failure.
    """

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class NullSink:
    """Keeps nothing: for hashing a tar stream without writing it anywhere."""

    def write(self, data: BytesLike) -> int:
        return len(data)


class CountingSink:
    """Forwards bytes to `out`, counting them. With `is_output`, a failing write to `out` is
    raised as OutputWriteError, so it stays apart from failures reading the source."""

    def __init__(self, out: ByteSink, *, is_output: bool = False) -> None:
        self._out = out
        self._is_output = is_output
        self.size = 0

    def write(self, data: BytesLike) -> int:
        if data:
            try:
                self._out.write(data)
            except OSError as err:
                if self._is_output:
                    raise OutputWriteError(err) from err
                raise
            self.size += len(data)
        return len(data)

    def tell(self) -> int:
        # tarfile asks for the position when it opens; it is the count of bytes written.
        return self.size


class HashingSink(CountingSink):
    """Forwards bytes to `out` while counting them and hashing them with sha256."""

    def __init__(self, out: ByteSink, *, is_output: bool = False) -> None:
        super().__init__(out, is_output=is_output)
        self._hash = hashlib.sha256()

    def write(self, data: BytesLike) -> int:
        if data:
            self._hash.update(data)
        return super().write(data)

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class HandOver:
    """Writes go to `target` from a second thread, through a small queue: the tar writing and
    compressing on one side and what the compressed bytes go to (a store blob writer hashing and
    writing them) on the other then run side by side (hashlib, zlib, zstd and file writes release
    the GIL), instead of one after the other on one core. Small writes are gathered into pieces
    of `piece` bytes first: a hand-over per small piece would cost more in thread switches than
    the work it moves. `finish()` sends what is left, waits for the last write and raises what
    the thread raised; the order of the bytes is kept."""

    def __init__(self, target: ByteSink, depth: int = 8, piece: int = 1 << 20) -> None:
        import queue
        import threading

        self._target = target
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._piece = piece
        self._gathered = bytearray()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="layer-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._target.write(chunk)
                except BaseException as exc:  # noqa: BLE001 - raised in the writing thread by finish()
                    self._error = exc

    def write(self, data: BytesLike) -> int:
        if self._error is not None:
            self.finish()
        if len(data) >= self._piece and not self._gathered:
            self._queue.put(bytes(data))
        else:
            self._gathered += data
            if len(self._gathered) >= self._piece:
                self._send_gathered()
        return len(data)

    def _send_gathered(self) -> None:
        self._queue.put(bytes(self._gathered))
        self._gathered.clear()

    def finish(self) -> None:
        if self._thread.is_alive():
            if self._gathered and self._error is None:
                self._send_gathered()
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def stop(self) -> None:
        """`finish()` after a failure elsewhere: that failure is the one reported, not this one's."""
        try:
            self.finish()
        except BaseException:  # noqa: BLE001 - secondary to the error being raised
            pass


class Compressor(Protocol):
    def write(self, data: BytesLike) -> int: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class PlainWriter:
    """No compression: the tar goes out as-is."""

    def __init__(self, sink: ByteSink) -> None:
        self._sink = sink

    def write(self, data: BytesLike) -> int:
        self._sink.write(data)
        return len(data)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _deflate_block(block: bytes, zdict: bytes | None, level: int, final: bool) -> bytes:
    if zdict:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
    else:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    body = comp.compress(block)
    return body + comp.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


class ParallelGzipWriter:
    """gzip in fixed-size blocks compressed by a thread pool; output independent of threads."""

    def __init__(
        self,
        sink: ByteSink,
        *,
        level: int = 6,
        threads: int | None = None,
        block_size: int = GZIP_BLOCK_SIZE,
    ) -> None:
        if not 0 <= level <= 9:
            raise ValueError(f"gzip level must be 0..9, got {level}")
        self._sink = sink
        self._level = level
        self._block_size = block_size
        self._threads = max(1, threads if threads else (os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(self._threads) if self._threads > 1 else None
        # Results waiting to be written, in input order; bounded so memory stays flat.
        self._pending: deque[Future[bytes] | bytes] = deque()
        self._max_pending = 2 * self._threads
        self._buffer = bytearray()
        self._prev_tail: bytes | None = None
        self._crc = 0
        self._length = 0
        xfl = 2 if level == 9 else (4 if level == 1 else 0)
        self._sink.write(b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + bytes([xfl, _GZIP_OS_UNKNOWN]))

    def write(self, data: BytesLike) -> int:
        if not data:
            return 0
        self._crc = zlib.crc32(data, self._crc)
        self._length += len(data)
        self._buffer += data
        while len(self._buffer) >= self._block_size:
            block = bytes(self._buffer[: self._block_size])
            del self._buffer[: self._block_size]
            self._submit(block, final=False)
        return len(data)

    def _submit(self, block: bytes, *, final: bool) -> None:
        zdict = self._prev_tail
        self._prev_tail = block[-_DEFLATE_WINDOW:] if block else zdict
        if self._pool is None:
            self._pending.append(_deflate_block(block, zdict, self._level, final))
        else:
            self._pending.append(self._pool.submit(_deflate_block, block, zdict, self._level, final))
        while len(self._pending) > self._max_pending:
            self._write_oldest()

    def _write_oldest(self) -> None:
        item = self._pending.popleft()
        self._sink.write(item if isinstance(item, bytes) else item.result())

    def close(self) -> None:
        try:
            self._submit(bytes(self._buffer), final=True)
            self._buffer.clear()
            while self._pending:
                self._write_oldest()
            self._sink.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._length & 0xFFFFFFFF))
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop the workers without finishing the stream (after an error)."""
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class ZstdWriter:
    """zstd with fixed parameters: checksum on, no content size, no dictionary.

    libzstd's multithreaded mode gives the same bytes for any worker count >= 1, but its
    single-threaded mode (0 workers) cuts the stream differently; so we always run in
    multithreaded mode, with at least one worker, and the thread count never shows in the output.
    """

    def __init__(self, sink: ByteSink, *, level: int = 3, threads: int | None = None) -> None:
        workers = max(1, threads if threads else (os.cpu_count() or 1))
        cctx = zstandard.ZstdCompressor(
            level=level,
            threads=workers,
            write_checksum=True,
            write_content_size=False,
            write_dict_id=False,
        )
        # Output in 1 MiB pieces (the bytes are the same for any size): fewer, larger writes downstream.
        # The stub asks for IO[bytes]; the writer only calls write() (flush(), close() and fileno() only if present).
        self._writer = cctx.stream_writer(
            sink, write_size=_ZSTD_CHUNK, closefd=False, write_return_read=True  # type: ignore[arg-type]
        )
        self._buffer = bytearray()

    def write(self, data: BytesLike) -> int:
        n = len(data)
        if n >= _ZSTD_DIRECT:
            # Large enough that a call for it alone costs nothing: what is gathered goes first,
            # then this as it is. libzstd copies its input itself; gathering a file's content
            # here first would copy each byte once or twice more (the output is the same for
            # any cut of the input).
            if self._buffer:
                self._writer.write(self._buffer)
                self._buffer.clear()
            self._writer.write(data)
            return n
        self._buffer += data  # small pieces (a small file's header and bytes) gathered: fewer calls
        if len(self._buffer) >= _ZSTD_CHUNK:
            self._writer.write(self._buffer)
            self._buffer.clear()
        return n

    def close(self) -> None:
        if self._buffer:
            self._writer.write(bytes(self._buffer))
            self._buffer.clear()
        self._writer.flush(zstandard.FLUSH_FRAME)
        self._writer.close()

    def abort(self) -> None:
        self._buffer.clear()


def open_compressor(
    compression: str, sink: ByteSink, *, level: int | None = None, threads: int | None = None
) -> Compressor:
    """A writer that compresses into `sink`; `close()` finishes the stream (not the sink)."""
    if compression == "gzip":
        return ParallelGzipWriter(sink, level=DEFAULT_LEVELS["gzip"] if level is None else level, threads=threads)
    if compression == "zstd":
        return ZstdWriter(sink, level=DEFAULT_LEVELS["zstd"] if level is None else level, threads=threads)
    if compression == "uncompressed":
        return PlainWriter(sink)
    raise ValueError(f"unknown layer compression {compression!r} (want gzip, zstd or uncompressed)")
