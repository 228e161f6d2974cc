"""Lazy layers: blobs the store knows where to get but has not downloaded yet.

A build that takes a step from a shared cache (`--cache-from`) gets the step's layer as a blob in
a registry or an OCI layout dir. The blob is not fetched then: the store records where it is
(`lazy_layers`: blob digest -> claimed diff_id, media type, size, origin), and an image may name
it. Its bytes move only when something reads them: unpacking it for a RUN or a COPY on top of it,
an export that writes it, a push to a registry that has no way to mount it. A push to the
registry that holds it moves no bytes (pushing.py checks, then mounts).

What is trusted: nothing about the blob until its bytes are here. It is written through a
verifying blob writer (digest checked against its name, the uncompressed stream hashed) and
must hash to the diff_id the cache claimed; only then does it enter the `layers` table and
the row here go away. A blob that does not is refused with an error naming the cache.

Fetching needs code above the store (the registry client): `register_fetcher(kind, fetch)` is
called by those packages when they are imported (builder.registry for "registry"); an OCI
layout dir ("oci-layout") is read here.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from builder.errors import StoreError
from builder.image.blobfiles import CHUNK, BlobWriter, check_digest, open_dir_nofollow
from builder.image.content import BlobStore
from builder.image.index import StoreIndex


class BlobTarget(Protocol):
    """What a fetcher writes into: the Store (a Protocol, so this module does not import it)."""

    def blob_writer(self, expected_digest: str | None = None, *,
                    layer: bool = False) -> AbstractContextManager[BlobWriter]: ...


# fetch(store, origin, digest, size): put the blob `digest` into `store` through
# `store.blob_writer(expected_digest=digest, layer=True)`, retrying broken transfers itself.
Fetch = Callable[[Any, dict[str, Any], str, int], None]
_FETCHERS: dict[str, Fetch] = {}


def register_fetcher(kind: str, fetch: Fetch) -> None:
    _FETCHERS[kind] = fetch


@dataclass(frozen=True)
class LazyLayer:
    blob_digest: str
    diff_id: str  # as the cache claimed it; checked when the bytes come
    media_type: str
    size: int
    origin: dict[str, Any]

    def describe(self) -> str:
        origin = self.origin
        if origin.get("type") == "registry":
            return f"{origin.get('registry')}/{origin.get('repository')}"
        return str(origin.get("path") or origin.get("type"))


class LazyLayers:
    def __init__(self, index: StoreIndex, blobs: BlobStore, lock: Callable) -> None:
        self.index = index
        self.blobs = blobs
        self.lock = lock

    def note(self, blob_digest: str, *, diff_id: str, media_type: str, size: int, origin: dict[str, Any]) -> None:
        """Remember where a layer blob can be fetched (nothing when the store has its bytes)."""
        check_digest(blob_digest)
        check_digest(diff_id)
        if self.blobs.has_blob(blob_digest):
            return
        with self.index.tx() as tx:
            tx.execute("INSERT OR REPLACE INTO lazy_layers(blob_digest, diff_id, media_type, size, origin, created) "
                       "VALUES (?,?,?,?,?,?)",
                       (blob_digest, diff_id, media_type, int(size), json.dumps(origin, sort_keys=True), time.time()))

    def get(self, blob_digest: str) -> LazyLayer | None:
        row = self.index.db().execute(
            "SELECT diff_id, media_type, size, origin FROM lazy_layers WHERE blob_digest=?", (blob_digest,)).fetchone()
        if row is None:
            return None
        try:
            origin = json.loads(row[3])
        except ValueError:
            origin = {}
        return LazyLayer(blob_digest, row[0], row[1], int(row[2]), origin if isinstance(origin, dict) else {})

    def is_lazy(self, blob_digest: str) -> bool:
        """The store knows where the blob is but has not its bytes."""
        return not self.blobs.has_blob(blob_digest) and self.get(blob_digest) is not None

    def digests(self) -> list[str]:
        return [row[0] for row in self.index.db().execute("SELECT blob_digest FROM lazy_layers")]

    def forget(self, blob_digests: list[str]) -> None:
        if blob_digests:
            with self.index.tx() as tx:
                tx.executemany("DELETE FROM lazy_layers WHERE blob_digest=?", [(d,) for d in blob_digests])

    def fetch(self, store: BlobTarget, blob_digest: str) -> None:
        """Download a lazy blob into the store and check it is the layer the cache claimed."""
        with self.lock("lazy-" + blob_digest.removeprefix("sha256:")):
            if self.blobs.has_blob(blob_digest):
                return
            lazy = self.get(blob_digest)
            if lazy is None:
                raise StoreError(f"layer blob {blob_digest} is missing from the store",
                                 hint="pull or build the image again")
            kind = str(lazy.origin.get("type"))
            fetch = _FETCHERS.get(kind) or (_fetch_from_layout if kind == "oci-layout" else None)
            if fetch is None:
                raise StoreError(f"layer blob {blob_digest} is still in the cache at {lazy.describe()}, and this "
                                 f"program cannot fetch from a {kind!r} source",
                                 hint="run the builder's command line (or import builder.registry first)")
            try:
                fetch(store, lazy.origin, blob_digest, lazy.size)
            except StoreError:
                raise
            except Exception as exc:
                message = getattr(exc, "message", None) or str(exc)
                raise StoreError(f"cannot fetch layer {blob_digest} from the cache at {lazy.describe()}: {message}",
                                 hint="the cache may have lost it: build again without --cache-from, or with "
                                      "--no-cache") from exc
            actual = self.blobs.layer_diff_id(blob_digest)
            self.forget([blob_digest])  # the bytes are here now: whatever they are, they speak for themselves
            if actual != lazy.diff_id:
                raise StoreError(
                    f"layer {blob_digest} from the cache at {lazy.describe()} unpacks to {actual}, not the "
                    f"{lazy.diff_id} its cache record claims",
                    hint="the cache is corrupt or was tampered with: build again with --no-cache and export "
                         "the cache anew")
            self.blobs.record_layer(actual, blob_digest, lazy.media_type, lazy.size)


def _fetch_from_layout(store: BlobTarget, origin: dict[str, Any], digest: str, size: int) -> None:
    """Copy a blob out of an OCI layout dir, opening nothing below it through a link."""
    path = origin.get("path")
    if not isinstance(path, str):
        raise StoreError("a lazy layer's origin names no directory")
    top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fds = [top]
    try:
        for part in ("blobs", "sha256"):
            fds.append(open_dir_nofollow(part, fds[-1]))
        try:
            fd = os.open(digest.removeprefix("sha256:"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fds[-1])
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreError(f"blob {digest} in {path} is a symbolic link") from None
            raise
    finally:
        for fd_open in fds:
            os.close(fd_open)
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            raise StoreError(f"blob {digest} in {path} is not a regular file")
        with store.blob_writer(expected_digest=digest, layer=True) as writer:
            while chunk := source.read(CHUNK):
                writer.write(chunk)
