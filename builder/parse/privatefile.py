"""Files the parser keeps in the store's private cache dir (compiled grammars, parsed
Buildfiles): read without following a link, written whole or not at all."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def read_private(path: Path) -> bytes | None:
    """The file's bytes, or None when it is missing or a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def write_private(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write `path` through a temp file beside it (the dir made 0700 if missing), renamed into
    place when `fill` returns: a concurrent build reads the old file or the whole new one."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
        os.rename(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
