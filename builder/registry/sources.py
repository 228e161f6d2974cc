"""Which registry repositories are known to hold a blob: the candidates for a cross-repo mount.

Kept as small text files `<store root>/registry-sources/<hex>` (one `registry/repository` per
line), written whole to a temp file and renamed. They are hints only: a lost or stale line makes
a push upload a blob it could have mounted, nothing worse. The store's gc does not know these
files; a hint for a blob that is gone is harmless (the mount simply fails).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.image.store import Store

MAX_SOURCES = 8


def _path(store: "Store", digest: str) -> Path:
    return Path(store.root) / "registry-sources" / digest.split(":", 1)[1]


def known_sources(store: "Store", digest: str) -> list[tuple[str, str]]:
    """(registry, repository) pairs, most recent first."""
    try:
        lines = _path(store, digest).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    pairs = []
    for line in lines:
        registry, sep, repository = line.partition("/")
        if sep and repository:
            pairs.append((registry, repository))
    return pairs


def remember_source(store: "Store", digest: str, registry: str, repository: str) -> None:
    entry = f"{registry}/{repository}"
    existing = [f"{r}/{p}" for r, p in known_sources(store, digest)]
    lines = [entry] + [line for line in existing if line != entry]
    path = _path(store, digest)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines[:MAX_SOURCES]) + "\n")
        os.replace(temp, path)
    except OSError:
        pass  # only a hint for future pushes
