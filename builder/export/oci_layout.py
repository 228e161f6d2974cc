"""Export an image as an OCI image layout: a directory, or the same tree as a deterministic tar.

Each tag gets its own index entry annotated with `org.opencontainers.image.ref.name` (the tag
part, what `skopeo oci:DIR:TAG` and `umoci --image DIR:TAG` look up) and
`io.containerd.image.name` (the full name, what `docker load`/containerd use).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

from builder.errors import OutputError
from builder.export.tarout import TarWriter, atomic_output_file
from builder.image import oci
from builder.image.blobfiles import fsync_dir
from builder.image.reference import InvalidReference, normalize_tag, parse_reference
from builder.image.store import Store
from builder.image.variants import Shipment, ShipPlan
from builder.platforms import Platform
from builder.progress import Transfer


def index_descriptors(store: Store, shipment: Shipment, tags: Sequence[str]) -> list[oci.Descriptor]:
    return _descriptors(store, shipment, tag_annotations(tags))


def tag_annotations(tags: Sequence[str]) -> list[dict[str, str]]:
    """The annotations of each tag's index entry; an invalid name is an OutputError (checked
    before anything is written)."""
    parsed_tags = []
    for tag in dict.fromkeys(tags):
        try:
            parsed_tags.append(parse_reference(normalize_tag(tag)))
        except InvalidReference as exc:
            raise OutputError(f"invalid image name {tag!r} for the OCI layout: {exc.message}", hint=exc.hint) from exc
    # ref.name is the tag alone (what `oci:DIR:TAG` looks up), unless two names share a tag:
    # then each gets its full name so every entry stays addressable.
    tag_parts = [p.tag_or_latest() for p in parsed_tags]
    unique = len(set(tag_parts)) == len(tag_parts)
    return [{oci.ANNOTATION_REF_NAME: parsed.tag_or_latest() if unique else parsed.familiar(),
             oci.ANNOTATION_CONTAINERD_NAME: str(parsed.with_tag(parsed.tag_or_latest()))}
            for parsed in parsed_tags]


def _descriptors(store: Store, shipment: Shipment, annotations: list[dict[str, str]]) -> list[oci.Descriptor]:
    manifest = shipment.manifest
    media_type = manifest.get("mediaType") or oci.OCI_MANIFEST
    size = len(shipment.manifest_bytes)
    config = store.read_json(oci.manifest_config(manifest).digest)
    platform = Platform.from_json(config)
    digest = shipment.manifest_digest
    if not annotations:
        return [oci.Descriptor(media_type, digest, size, platform=platform)]
    return [oci.Descriptor(media_type, digest, size, annotations=entry, platform=platform) for entry in annotations]


def _layout_json() -> bytes:
    return oci.canonical_json({"imageLayoutVersion": oci.LAYOUT_VERSION})


def export_oci(store: Store, manifest_digest: str, dest: Path | str, *, tar: bool = True,
               tags: Sequence[str] = (), mtime: int = 0, compression: str = "gzip", level: int | None = None,
               force_compression: bool = False, transfer: Transfer | None = None) -> Shipment:
    """Write the image as an OCI layout at `dest` (a tar file, "-" for stdout, or a directory),
    its layers in `compression` (made now where the store has no such blob yet; see
    builder.image.variants). Returns what was shipped (the manifest digest in the layout).
    `transfer` is told the bytes of the tar as it is written."""
    if not tar:
        shipment = store.ship(manifest_digest, compression=compression, level=level, force=force_compression)
        _export_oci_dir(store, Path(dest), shipment.blobs, index_descriptors(store, shipment, tags))
        return shipment
    annotations = tag_annotations(tags)
    plan = store.plan_ship(manifest_digest, compression=compression, level=level, force=force_compression)
    with atomic_output_file(dest) as out:
        return _write_oci_tar(store, plan, TarWriter(out, mtime=mtime, transfer=transfer), annotations,
                              stream=str(dest) != "-")


def _write_oci_tar(store: Store, plan: ShipPlan, tar: TarWriter, annotations: list[dict[str, str]], *,
                   stream: bool) -> Shipment:
    """The layout as a tar, its members in an order that depends on the image alone: the blobs
    dirs, the layers in manifest order, the config, the manifest, index.json, oci-layout.

    Layers are made (compressed) in parallel where the store has no blob for them yet. With
    `stream`, the largest of those goes into the tar as it is made (the same bytes also become
    the store's blob), so the biggest blob is written once and never copied afterwards; the
    others are copied from the store when their turn comes."""
    pending = plan.pending()
    streamed = max(pending, key=lambda index: (plan.uncompressed_size(index), -index)) if stream and pending else None
    made: dict[int, oci.Descriptor] = {}
    written: set[str] = set()
    tar.add_dir("blobs")
    tar.add_dir("blobs/sha256")

    def add_blob(digest: str, size: int) -> None:
        if digest not in written:
            written.add(digest)
            tar.add_path(_blob_name(digest), store.blob_path(digest), size)

    with plan.pool() as pool:
        making = {index: pool.submit(plan.make, index) for index in pending if index != streamed}
        for index, ready in enumerate(plan.ready):
            if ready is not None:
                add_blob(ready.digest, ready.size)
                continue
            if index not in making and index != streamed:
                continue  # a layer made for an earlier index (the same diff_id): in the tar already
            if index == streamed:
                member = tar.begin_streamed()
                made[index] = blob = plan.make(index, tee=member)
                if blob.digest in written:
                    member.drop()  # its bytes are those of a blob in the tar already (a base layer's)
                    continue
                if member.finish(_blob_name(blob.digest)):
                    written.add(blob.digest)
                    continue
            else:
                made[index] = blob = making[index].result()
            add_blob(blob.digest, blob.size)
    shipment = plan.finish(made)
    config = oci.manifest_config(shipment.manifest)
    add_blob(config.digest, config.size)
    if shipment.manifest_digest not in written:
        written.add(shipment.manifest_digest)
        tar.add_bytes(_blob_name(shipment.manifest_digest), shipment.manifest_bytes)
    tar.add_bytes("index.json", oci.canonical_json(oci.make_index(_descriptors(store, shipment, annotations))))
    tar.add_bytes("oci-layout", _layout_json())
    tar.close()
    return shipment


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{digest.removeprefix('sha256:')}"


def _export_oci_dir(store: Store, dest: Path, blobs: list[tuple[str, int]],
                    descriptors: list[oci.Descriptor]) -> None:
    """Write (or add to) an OCI layout dir. Blobs first, index.json last, each atomically."""
    index_path = dest / "index.json"
    existing: list[dict] = []
    if dest.exists():
        if not dest.is_dir():
            raise OutputError(f"OCI output {dest} exists and is not a directory",
                              hint="remove it, or use tar=true to write an archive")
        if any(dest.iterdir()):
            if not (dest / "oci-layout").is_file() or not index_path.is_file():
                raise OutputError(f"OCI output directory {dest} is not empty and not an OCI layout",
                                  hint="give an empty or new directory")
            try:
                existing = list(json.loads(index_path.read_bytes()).get("manifests") or [])
            except (OSError, ValueError) as exc:
                raise OutputError(f"cannot read {index_path}: {exc}") from exc
    try:
        blob_dir = dest / "blobs" / "sha256"
        blob_dir.mkdir(parents=True, exist_ok=True)
        for digest, _ in blobs:
            target = blob_dir / digest.removeprefix("sha256:")
            if target.exists():
                continue
            _atomic_copy(store.blob_path(digest), target)
        fsync_dir(blob_dir)
        _atomic_write(dest / "oci-layout", _layout_json())
        # Entries with a ref.name we now write are replaced (like re-tagging); the rest stay.
        new_names = {d.annotations.get(oci.ANNOTATION_REF_NAME) for d in descriptors if d.annotations}
        kept = [m for m in existing
                if (m.get("annotations") or {}).get(oci.ANNOTATION_REF_NAME) not in new_names
                and not (not new_names and m.get("digest") == descriptors[0].digest)]
        index = oci.make_index([])
        index["manifests"] = kept + [d.to_json() for d in descriptors]
        _atomic_write(index_path, oci.canonical_json(index))
        fsync_dir(dest)
    except OSError as exc:
        raise OutputError(f"cannot write OCI layout {dest}: {exc.strerror or exc}") from exc


def _atomic_write(path: Path, data: bytes) -> None:
    _atomic_fill(path, lambda out: out.write(data))


def _atomic_copy(src: Path, dest: Path) -> None:
    def fill(out: BinaryIO) -> None:
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)

    _atomic_fill(dest, fill)


def _atomic_fill(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write `path` through a temp file in its dir, fsynced and renamed: never seen half written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
