"""Push an image from the local store to a registry.

For each blob (config, then layers): skip it when the target repository has it (HEAD), else try
a cross-repository mount from a repository of the same registry known to hold it (one we pulled
it from or pushed it to, or another tag of this image), else upload it. The manifest is PUT last,
by tag. A pulled image whose layers need no change goes out with its stored manifest bytes (the
remote digest is the local one); an image with layers made here goes out with the manifest of its
compressed layers (builder.image.variants), stored too, so pushing again gives the same digest.
A layer the build took from a registry cache and never read (builder.image.lazy) is found in
the target or mounted from the cache's repository; only when neither works are its bytes
fetched (and checked), then uploaded.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable

from builder.errors import RegistryError
from builder.progress import CountingReader, Event, EventCallback, EventKind, Transfer

from . import mediatypes
from .client import RegistryClient, push_scope
from .sources import known_sources, remember_source

if TYPE_CHECKING:
    from builder.image.store import Store


def _counted(store: "Store", digest: str, transfer: Transfer) -> Callable[[], BinaryIO]:
    """Opens the blob for an upload; each opening (a retry, a chunk) counts from its offset."""

    def opener() -> BinaryIO:
        transfer.restart()
        return CountingReader(store.open_blob(digest), transfer)  # type: ignore[return-value]

    return opener


def _mount_candidates(store: "Store", digest: str, registry: str, repository: str, tags: list[str]) -> list[str]:
    from builder.image.reference import parse_reference

    candidates = [repo for reg, repo in known_sources(store, digest) if reg == registry and repo != repository]
    for tag in tags:
        try:
            parsed = parse_reference(tag)
        except Exception:  # a stored tag that no longer parses is not a mount source
            continue
        if parsed.registry == registry and parsed.repository != repository and parsed.repository not in candidates:
            candidates.append(parsed.repository)
    return candidates


def push_image(
    store: "Store",
    local_ref: str,
    remote_ref: str | None = None,
    *,
    insecure: Iterable[str] = (),
    chunk_size: int = 0,
    compression: str = "gzip",
    level: int | None = None,
    force_compression: bool = False,
    on_event: EventCallback | None = None,
    step: int = 0,
) -> str:
    """Push a stored image to `remote_ref` (default: `local_ref`); returns the pushed manifest's
    digest. Layers made here go out in `compression` (made now where missing, then kept); a base
    image's blobs go as they are unless `force_compression`.

    `chunk_size` > 0 uploads blobs larger than it in PATCH chunks of that size. `on_event` gets
    push-start, progress (bytes of each upload, rate-limited) and push-done, marked with `step`."""
    started = time.monotonic()
    shown = remote_ref or local_ref
    if on_event is not None:
        on_event(Event(EventKind.PUSH_START, step=step, text=shown))
    digest = _push(store, local_ref, remote_ref, insecure, chunk_size, compression, level, force_compression,
                   on_event, step)
    if on_event is not None:
        on_event(Event(EventKind.PUSH_DONE, step=step, text=shown, id=digest, seconds=time.monotonic() - started))
    return digest


def _push(store: "Store", local_ref: str, remote_ref: str | None, insecure: Iterable[str], chunk_size: int,
          compression: str, level: int | None, force_compression: bool, on_event: EventCallback | None,
          step: int) -> str:
    from builder.image.reference import parse_reference

    record = store.load_image(local_ref)
    target = parse_reference(remote_ref or local_ref)
    if target.digest:
        raise RegistryError(f"cannot push to {remote_ref or local_ref}: a push destination is a tag, not a digest")
    repository = target.repository
    tag = target.tag_or_latest()
    client = RegistryClient(target.registry, insecure=insecure, chunk_size=chunk_size)

    # Lazy layers (taken from a registry cache) stay there unless this push must upload them.
    shipment = store.ship(record.manifest_digest, compression=compression, level=level, force=force_compression,
                          fetch=force_compression)
    manifest_bytes = shipment.manifest_bytes
    manifest = shipment.manifest
    media_type = manifest.get("mediaType") or mediatypes.OCI_MANIFEST
    descriptors = [manifest["config"], *manifest.get("layers", [])]
    for descriptor in descriptors:
        digest, size = descriptor["digest"], int(descriptor["size"])
        if not store.has_blob(digest) and not store.is_lazy(digest):
            raise RegistryError(
                f"cannot push {local_ref}: blob {digest} is missing from the local store",
                hint="pull or build the image again",
            )
        if client.blob_exists(repository, digest, scopes=[push_scope(repository)]):
            continue
        mounted = False
        for source in _mount_candidates(store, digest, target.registry, repository, record.tags):
            if client.mount_blob(repository, digest, source):
                mounted = True
                break
        if not mounted:
            transfer = Transfer(on_event, step=step, id=digest, text=digest[:19], total=size)
            client.upload_blob(repository, digest, size, _counted(store, digest, transfer))
            transfer.finish()
        remember_source(store, digest, target.registry, repository)
    return client.put_manifest(repository, tag, manifest_bytes, media_type)
