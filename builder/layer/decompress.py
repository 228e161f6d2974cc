"""Open a possibly compressed tar stream: detect the format by its magic bytes."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from typing import BinaryIO, Protocol

import zstandard

from builder.errors import ArchiveError

_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)
_MAGIC_LEN = max(len(magic) for magic, _ in _MAGICS)
# zstd input is fed in adaptive pieces because the decompressobj API cannot cap its output and
# one byte of a run of zeros can expand to ~32 KiB: the piece size follows the observed ratio so
# each call yields about _ZSTD_TARGET_OUTPUT bytes (a few MiB at most for all-zero data).
_ZSTD_TARGET_OUTPUT = 1 << 20
_ZSTD_MIN_INPUT = 128
_ZSTD_MAX_INPUT = 1 << 16
_DECODE_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, ValueError)


class ByteSource(Protocol):
    """All the layer readers need of their input: a file, an HTTP body, a hashing reader..."""

    def read(self, size: int = -1, /) -> bytes: ...


def detect_compression(head: bytes) -> str:
    """"gzip", "zstd", "bzip2", "xz" or "none" from the first bytes of a stream."""
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    return "none"


class _PrefixedReader(io.RawIOBase):
    """Gives back the bytes already read for sniffing, then the rest of the stream."""

    def __init__(self, head: bytes, rest: ByteSource) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(view))
        if not data:
            return 0
        view[: len(data)] = data
        return len(data)


class _ErrorTranslatingReader(io.RawIOBase):
    """Turns decoder failures (bad CRC, truncated stream, garbage) into ArchiveError."""

    def __init__(self, inner: ByteSource, kind: str) -> None:
        self._inner = inner
        self._kind = kind

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._inner.read(len(view))
        except ArchiveError:
            raise
        except _DECODE_ERRORS as err:
            raise ArchiveError(
                f"corrupt or truncated {self._kind} data in archive: {err or type(err).__name__}"
            ) from err
        view[: len(data)] = data
        return len(data)


class _ZstdReader(io.RawIOBase):
    """zstd frames read to the end; a stream that stops inside a frame is an error."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._decomp = zstandard.ZstdDecompressor().decompressobj()
        self._pending = b""
        self._offset = 0  # read position in _pending (slicing bytes would copy the rest)
        self._input_size = 1024
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        while self._offset >= len(self._pending) and not self._eof:
            if self._decomp.eof and self._decomp.unused_data:
                # Bytes after a finished frame: the next frame (concatenated zstd streams).
                chunk = self._decomp.unused_data
                self._decomp = zstandard.ZstdDecompressor().decompressobj()
            else:
                chunk = self._source.read(self._input_size)
                if not chunk:
                    self._eof = True
                    if not self._decomp.eof:
                        raise ArchiveError("truncated zstd data in archive: the stream ends inside a frame")
                    break
                if self._decomp.eof:
                    self._decomp = zstandard.ZstdDecompressor().decompressobj()
            self._pending = b""  # drop the old buffer before making the next one
            self._pending = self._decomp.decompress(chunk)
            self._offset = 0
            ratio = len(self._pending) / len(chunk)
            wanted = int(_ZSTD_TARGET_OUTPUT / ratio) if ratio else _ZSTD_MAX_INPUT
            self._input_size = min(max(wanted, _ZSTD_MIN_INPUT), _ZSTD_MAX_INPUT)
        n = min(len(view), len(self._pending) - self._offset)
        view[:n] = self._pending[self._offset : self._offset + n]
        self._offset += n
        return n


def open_layer_stream(fileobj: ByteSource) -> BinaryIO:
    """A readable stream of the uncompressed tar in `fileobj` (gzip/zstd/bzip2/xz/plain).

    Reads forward only (works on pipes and HTTP bodies). Decoding errors surface as
    ArchiveError when the returned stream is read.
    """
    head = b""
    while len(head) < _MAGIC_LEN:
        piece = fileobj.read(_MAGIC_LEN - len(head))
        if not piece:
            break
        head += piece
    kind = detect_compression(head)
    raw = io.BufferedReader(_PrefixedReader(head, fileobj), buffer_size=1 << 16)
    if kind == "none":
        return raw
    decoder: ByteSource
    if kind == "gzip":
        decoder = gzip.GzipFile(fileobj=raw, mode="rb")
    elif kind == "zstd":
        decoder = _ZstdReader(raw)
    elif kind == "bzip2":
        decoder = bz2.BZ2File(raw, mode="rb")
    else:
        decoder = lzma.LZMAFile(raw, mode="rb")
    return io.BufferedReader(_ErrorTranslatingReader(decoder, kind), buffer_size=1 << 16)
