"""Pull an image from a registry into the local store.

Order of visibility (what makes a killed or failed pull harmless): each blob is streamed into
the store's blob_writer, whose temp file is published only once complete and matching its
digest; a layer's uncompressed content is hashed on the way (one pass) and must be the diff_id
the config claims for it; the image record, its layer rows and its tag are written only after
every blob is in and every diff_id checked. A failure at any point leaves at most some
digest-verified, unreferenced blobs (reused by the next pull, swept by gc), nothing else.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Iterable

from builder.errors import BuildError, RegistryError, StoreError
from builder.platforms import Platform
from builder.progress import CountingSink, Event, EventCallback, EventKind, Transfer

from . import mediatypes
from .client import Manifest, RegistryClient
from .platform import select_manifest
from .sources import remember_source
from .transport import TransientError

if TYPE_CHECKING:
    from builder.image.store import ImageRecord, Store

PARALLEL_DOWNLOADS = 3


def _short(digest: str) -> str:
    """`sha256:0123456789ab`, as progress shows a blob."""
    return digest[:19]


def _descriptor(raw: object, what: str) -> tuple[str, int, str]:
    """(digest, size, media type) of a manifest entry, refusing anything malformed."""
    if not isinstance(raw, dict):
        raise RegistryError(f"{what}: descriptor is not an object")
    digest, size, media_type = raw.get("digest"), raw.get("size"), raw.get("mediaType", "")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise RegistryError(f"{what}: unsupported or malformed digest {digest!r}")
    if not isinstance(size, int) or size < 0:
        raise RegistryError(f"{what}: descriptor for {digest} has no valid size")
    return digest, size, str(media_type)


def fetch_into_store(
    store: "Store", client: RegistryClient, repository: str, digest: str, size: int, attempts: int = 3,
    *, layer: bool = False, transfer: Transfer | None = None,
) -> None:
    """Download one blob unless the store has it; a broken transfer starts over (bounded).

    `layer=True` hashes the uncompressed content while it streams in (see Store.layer_diff_id).
    `transfer` is told the bytes as they come."""
    if store.has_blob(digest):
        return
    last: Exception | None = None
    for _attempt in range(attempts):
        try:
            # The writer's temp file is discarded on any exception: nothing partial is published.
            with store.blob_writer(expected_digest=digest, layer=layer) as writer:
                client.fetch_blob(repository, digest, writer if transfer is None else CountingSink(writer, transfer),
                                  size)
            if transfer is not None:
                transfer.finish()
            return
        except TransientError as exc:
            last = exc
            if transfer is not None:
                transfer.restart()
        except StoreError as exc:  # e.g. the disk is full: say which blob of which image
            raise RegistryError(f"blob {digest} from {client.registry}/{repository}: {exc.message}") from exc
    raise RegistryError(
        f"cannot download blob {digest} from {client.registry}/{repository}: {last}",
        hint="the connection keeps breaking; try again",
    )


def fetch_lazy_blob(store: "Store", origin: dict, digest: str, size: int) -> None:
    """Fetch a lazy layer blob (builder.image.lazy) from the registry repository it came from."""
    registry, repository = origin.get("registry"), origin.get("repository")
    if not isinstance(registry, str) or not isinstance(repository, str):
        raise RegistryError(f"blob {digest}: its origin names no registry repository")
    client = RegistryClient(registry, insecure=(registry,) if origin.get("insecure") else ())
    fetch_into_store(store, client, repository, digest, size, layer=True)
    remember_source(store, digest, registry, repository)


def check_diff_ids(store: "Store", config: dict, layer_digests: list[str], what: str) -> None:
    """Each layer's uncompressed content (hashed by us) must be the diff_id the config claims."""
    from builder.image import oci

    try:
        claimed_ids = oci.config_diff_ids(config)
    except (BuildError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RegistryError(f"{what}: the image config has no valid rootfs.diff_ids ({exc})") from exc
    if len(claimed_ids) != len(layer_digests):
        raise RegistryError(f"{what}: the manifest lists {len(layer_digests)} layers but the config "
                            f"{len(claimed_ids)} diff_ids")
    for digest, claimed in zip(layer_digests, claimed_ids, strict=True):
        try:
            actual = store.layer_diff_id(digest)
        except StoreError as exc:
            raise RegistryError(f"{what}: {exc.message}", hint=exc.hint) from exc
        if actual != claimed:
            raise RegistryError(
                f"{what}: layer {digest}: the image config claims diff_id {claimed}, but the layer's "
                f"uncompressed content hashes to {actual}",
                hint="the registry's image is corrupt or was crafted to pass one layer off as another; "
                     "nothing was recorded (the downloaded blobs are left for prune)")


def resolve_image_manifest(
    client: RegistryClient, repository: str, reference: str, platform: str | None, what: str
) -> Manifest:
    """The image manifest for `reference`, going through an index to the wanted platform."""
    top = client.get_manifest(repository, reference)
    if top.media_type in mediatypes.INDEXES:
        entry = select_manifest(top.json(), Platform.parse(platform) if platform else Platform.host(), what)
        digest, _size, _media = _descriptor(entry, what)
        manifest = client.get_manifest(repository, digest)
        if manifest.media_type in mediatypes.INDEXES:
            raise RegistryError(f"{what}: nested image indexes are not supported")
    else:
        manifest = top
    if manifest.media_type not in mediatypes.IMAGE_MANIFESTS:
        hint = (
            "this is a schema 1 manifest, which is deprecated; push the image again with a current tool"
            if "v1+" in manifest.media_type or "prettyjws" in manifest.media_type
            else None
        )
        raise RegistryError(f"{what}: unsupported manifest type {manifest.media_type!r}", hint=hint)
    return manifest


def pull_image(
    store: "Store", ref: str, *, platform: str | None = None, insecure: Iterable[str] = (),
    on_event: EventCallback | None = None, step: int = 0,
) -> "ImageRecord":
    """Pull `ref` (tag or digest) into `store` and tag it; returns the stored image record.

    `on_event` gets pull-start, progress (bytes of each layer, rate-limited) and pull-done
    events, marked with `step`."""
    started = time.monotonic()
    if on_event is not None:
        on_event(Event(EventKind.PULL_START, step=step, text=ref))
    record = _pull(store, ref, platform, insecure, on_event, step)
    if on_event is not None:
        on_event(Event(EventKind.PULL_DONE, step=step, text=ref, id=record.manifest_digest,
                       seconds=time.monotonic() - started))
    return record


def _pull(store: "Store", ref: str, platform: str | None, insecure: Iterable[str], on_event: EventCallback | None,
          step: int) -> "ImageRecord":
    from builder.image.reference import parse_reference

    reference = parse_reference(ref)
    repository = reference.repository
    target = reference.digest or reference.tag_or_latest()
    what = f"{reference.familiar_name()}{'@' if reference.digest else ':'}{target}"
    client = RegistryClient(reference.registry, insecure=insecure)

    manifest = resolve_image_manifest(client, repository, target, platform, what)
    body = manifest.json()
    config_digest, config_size, config_type = _descriptor(body.get("config"), what)
    if config_type and config_type not in mediatypes.CONFIGS:
        raise RegistryError(
            f"{what} is not a container image (config type {config_type})",
            hint="it may be an artifact such as a Helm chart or a signature",
        )
    layers_raw = body.get("layers")
    if not isinstance(layers_raw, list):
        raise RegistryError(f"{what}: manifest without a layers list")
    layers = [_descriptor(layer, what) for layer in layers_raw]
    for digest, _size, media_type in layers:
        if media_type not in mediatypes.LAYERS:
            raise RegistryError(f"{what}: layer {digest} has unsupported media type {media_type!r}")

    fetch_into_store(store, client, repository, config_digest, config_size)
    wanted = Platform.parse(platform) if platform else None
    config = store.read_json(config_digest)
    if wanted and not Platform.from_json(config).matches(wanted):
        raise RegistryError(
            f"{what} is for {config.get('os')}/{config.get('architecture')}, not the requested {wanted}"
        )
    with ThreadPoolExecutor(max_workers=PARALLEL_DOWNLOADS) as pool:
        futures = [
            pool.submit(fetch_into_store, store, client, repository, digest, size, layer=True,
                        transfer=Transfer(on_event, step=step, id=digest, text=_short(digest), total=size))
            for digest, size, _ in layers
        ]
        for future in futures:
            future.result()  # re-raises the first failure after the pool has finished
    check_diff_ids(store, config, [digest for digest, _, _ in layers], what)

    # Unpacked now, as `docker pull` does, so a build on it starts at once.
    store.unpack_layers(manifest.json(), config)
    # Every blob is in: now, and only now, the image and its tag become visible.
    record = store.save_image_bytes(manifest.data, store.read_blob(config_digest))
    for digest, _size, _media in [(config_digest, config_size, config_type), *layers]:
        remember_source(store, digest, reference.registry, repository)
    if reference.tag or not reference.digest:
        store.tag(f"{reference.familiar_name()}:{reference.tag_or_latest()}", record.manifest_digest)
        record = store.load_image(record.manifest_digest)
    return record
