"""Getting images into the store: docker-archive / OCI archive or layout (`load`), rootfs (`import`).

`load_archive` verifies everything first: every blob is written to the store's staging area and
checked against its digest, every layer's uncompressed content is hashed on the way (one read)
and checked against the diff_id its config claims, and only when the whole archive is good are
the blobs published and the images and tags recorded. A malformed or lying archive leaves the
store as it was: its staged blobs are deleted.
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence

from builder.errors import ArchiveError, StoreError
from builder.image import oci
from builder.image.blobfiles import BlobWriter, DigestMismatch
from builder.image.content import Staging
from builder.image.reference import InvalidReference, normalize_tag, parse_reference
from builder.image.store import ImageRecord, Store
from builder.layer.decompress import open_layer_stream
from builder.layer.extract import unpack_layer
from builder.platforms import Platform

_CHUNK = 1 << 20
_MAX_JSON = 64 << 20  # manifests/configs/indexes larger than this are not plausible
_HEX64 = re.compile(r"[0-9a-f]{64}")


# --- reading archives: a tar file or a directory -------------------------------------------------


class _Source:
    label: str

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def read_json(self, name: str) -> Any:
        with self.open(name) as f:
            data = f.read(_MAX_JSON + 1)
        if len(data) > _MAX_JSON:
            raise ArchiveError(f"{self.label}: {name} is implausibly large")
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArchiveError(f"{self.label}: {name} is not valid JSON: {exc}") from exc

    def read_bytes(self, name: str) -> bytes:
        with self.open(name) as f:
            data = f.read(_MAX_JSON + 1)
        if len(data) > _MAX_JSON:
            raise ArchiveError(f"{self.label}: {name} is implausibly large")
        return data


def _clean_name(name: str) -> str | None:
    """Archive-relative name without `./`; None when it would leave the archive."""
    if name.startswith("/"):
        return None
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../"):
        return None
    return norm


class _TarSource(_Source):
    def __init__(self, path: Path, label: str) -> None:
        self.label = label
        try:
            self._tar = tarfile.open(path, mode="r:")
            members = self._tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveError(f"{label} is not a readable tar archive: {exc}",
                               hint="docker-archive (`docker save`) and OCI archives are tar files") from exc
        self._members: dict[str, tarfile.TarInfo] = {}
        for member in members:
            name = _clean_name(member.name)
            if name is not None:
                self._members[name] = member

    def close(self) -> None:
        self._tar.close()

    def _resolve(self, name: str, depth: int = 0) -> tarfile.TarInfo:
        if depth > 16:
            raise ArchiveError(f"{self.label}: too many levels of links at {name}")
        member = self._members.get(name)
        if member is None:
            raise ArchiveError(f"{self.label}: {name} is missing from the archive")
        if member.issym():
            target = _clean_name(posixpath.join(posixpath.dirname(name), member.linkname))
            if target is None:
                raise ArchiveError(f"{self.label}: {name} links outside the archive")
            return self._resolve(target, depth + 1)
        if member.islnk():
            target = _clean_name(member.linkname)
            if target is None:
                raise ArchiveError(f"{self.label}: {name} links outside the archive")
            return self._resolve(target, depth + 1)
        if not member.isfile():
            raise ArchiveError(f"{self.label}: {name} is not a regular file")
        return member

    def exists(self, name: str) -> bool:
        return name in self._members

    def open(self, name: str) -> BinaryIO:
        member = self._resolve(name)
        f = self._tar.extractfile(member)
        assert f is not None
        return f  # type: ignore[return-value]


class _DirSource(_Source):
    def __init__(self, root: Path, label: str) -> None:
        self.root = root.resolve()
        self.label = label

    def _path(self, name: str) -> Path:
        clean = _clean_name(name)
        path = (self.root / clean).resolve() if clean is not None else None
        if path is None or not path.is_relative_to(self.root):
            raise ArchiveError(f"{self.label}: {name} points outside the directory")
        return path

    def exists(self, name: str) -> bool:
        try:
            return self._path(name).exists()
        except ArchiveError:
            return False

    def open(self, name: str) -> BinaryIO:
        path = self._path(name)
        if not path.is_file():
            raise ArchiveError(f"{self.label}: {name} is missing")
        return open(path, "rb")

    def close(self) -> None:
        pass


def _open_source(path: Path, work: Path) -> _Source:
    label = str(path)
    if path.is_dir():
        return _DirSource(path, label)
    if not path.is_file():
        raise ArchiveError(f"{label}: no such file or directory")
    with open(path, "rb") as f:
        head = f.read(6)
    from builder.layer import detect_compression

    if detect_compression(head) == "none":
        return _TarSource(path, label)
    # A compressed archive (`docker save | gzip`): decompress once so members can be read in any order.
    plain = work / "archive.tar"
    with open(path, "rb") as raw, open(plain, "wb") as out:
        stream = open_layer_stream(raw)
        while chunk := stream.read(_CHUNK):
            out.write(chunk)
    return _TarSource(plain, label)


# --- loading -------------------------------------------------------------------------------------


@dataclass
class _PendingImage:
    manifest_bytes: bytes
    config_bytes: bytes
    tags: list[str]


class _Loader:
    def __init__(self, store: Store, staging: Staging, source: _Source, name: str | None) -> None:
        self.store = store
        self.staging = staging
        self.source = source
        self.name = name
        self.staged: dict[str, tuple[str, int]] = {}  # blob digest -> (media type, size), this archive
        self.layer_diff_ids: dict[str, str] = {}  # layer blob digest -> diff_id we hashed
        self.images: list[_PendingImage] = []

    # -- helpers --

    def _stage_blob(self, member: str, expected: str, size: int | None = None, *,
                    layer: bool = False) -> BlobWriter | None:
        """Stage one blob unless it is here already; with `layer=True` the writer learns its diff_id."""
        if expected in self.staged or self.store.has_blob(expected):
            return None
        try:
            with self.source.open(member) as f, self.staging.blob_writer(expected, layer=layer) as writer:
                while chunk := f.read(_CHUNK):
                    writer.write(chunk)
        except DigestMismatch as exc:
            raise ArchiveError(f"{self.source.label}: {member} does not match its digest {expected}",
                               hint="the archive is corrupt or was modified") from exc
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveError(f"{self.source.label}: cannot read {member}: {exc}") from exc
        if size is not None and writer.size != size:
            raise ArchiveError(f"{self.source.label}: {member} is {writer.size} bytes, its descriptor says {size}")
        self.staged[expected] = ("", writer.size)
        return writer

    def _stage_layer(self, member: str, digest: str, size: int | None) -> str:
        """Stage a layer blob; returns the diff_id hashed from its uncompressed content."""
        if digest in self.layer_diff_ids:
            return self.layer_diff_ids[digest]
        writer = self._stage_blob(member, digest, size, layer=True)
        if writer is not None:
            if writer.diff_id is None:
                raise ArchiveError(f"{self.source.label}: layer {digest} is not a readable layer: {writer.layer_error}")
            diff_id = writer.diff_id
        elif digest in self.staged:  # staged by this archive as something else first
            with open(self.staging.path_of(digest), "rb") as raw:
                diff_id = _digest_stream(open_layer_stream(raw))
        else:  # in the store already: what the builder hashed, never what some config said
            try:
                diff_id = self.store.layer_diff_id(digest)
            except StoreError as exc:
                raise ArchiveError(f"{self.source.label}: {exc.message}", hint=exc.hint) from exc
        self.layer_diff_ids[digest] = diff_id
        return diff_id

    def _check_diff_id(self, where: str, layer: str, claimed: str, actual: str) -> None:
        if claimed != actual:
            raise ArchiveError(
                f"{self.source.label}: layer {layer} does not match diff_id {claimed} that {where} "
                f"claims: its uncompressed content hashes to {actual}",
                hint="the archive is corrupt or was crafted to pass one layer off as another; nothing was loaded")

    def _read_verified(self, member: str, digest: str) -> bytes:
        data = self.source.read_bytes(member)
        if oci.sha256_digest(data) != digest:
            raise ArchiveError(f"{self.source.label}: {member} does not match its digest {digest}",
                               hint="the archive is corrupt or was modified")
        return data

    def _tag_list(self, names: Sequence[str]) -> list[str]:
        tags = []
        for name in names:
            try:
                tags.append(normalize_tag(name))
            except InvalidReference as exc:
                raise ArchiveError(f"{self.source.label}: invalid image name {name!r}: {exc.message}") from exc
        return tags

    # -- OCI layout --

    def load_oci(self) -> None:
        layout = self.source.read_json("oci-layout")
        if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
            raise ArchiveError(f"{self.source.label}: oci-layout has no imageLayoutVersion")
        index = self.source.read_json("index.json")
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list):
            raise ArchiveError(f"{self.source.label}: index.json has no manifests list")
        for entry in manifests:
            desc = self._descriptor(entry, "index.json")
            annotations = dict(desc.annotations or {})
            self._load_oci_descriptor(desc, self._oci_tags(annotations))

    def _descriptor(self, obj: Any, where: str) -> oci.Descriptor:
        try:
            desc = oci.Descriptor.from_json(obj)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArchiveError(f"{self.source.label}: malformed descriptor in {where}: {exc!r}") from exc
        if not oci.is_digest(desc.digest):
            raise ArchiveError(f"{self.source.label}: unsupported digest {desc.digest!r} in {where}",
                               hint="only sha256 digests are supported")
        return desc

    def _oci_tags(self, annotations: dict[str, str]) -> list[str]:
        full = annotations.get(oci.ANNOTATION_CONTAINERD_NAME)
        ref_name = annotations.get(oci.ANNOTATION_REF_NAME)
        if full:
            return self._tag_list([full])
        if not ref_name:
            return []
        if "/" in ref_name or ":" in ref_name:  # a full reference, as some tools write
            return self._tag_list([ref_name])
        if self.name:  # ref.name is only a tag: attach it to the name the caller gave
            return self._tag_list([f"{parse_reference(self.name).familiar_name()}:{ref_name}"])
        return []

    def _blob_member(self, digest: str) -> str:
        return "blobs/sha256/" + digest.removeprefix("sha256:")

    def _load_oci_descriptor(self, desc: oci.Descriptor, tags: list[str], depth: int = 0) -> None:
        if desc.media_type in oci.INDEX_TYPES:
            if depth > 4:
                raise ArchiveError(f"{self.source.label}: indexes nested too deeply")
            nested = json.loads(self._read_verified(self._blob_member(desc.digest), desc.digest))
            candidates = [self._descriptor(m, desc.digest) for m in nested.get("manifests") or []]
            host = Platform.host()
            chosen = [c for c in candidates if c.platform is None or c.platform.matches(host)]
            chosen = [c for c in chosen if c.media_type in oci.MANIFEST_TYPES | oci.INDEX_TYPES]
            if not chosen:
                raise ArchiveError(f"{self.source.label}: index {desc.digest} has no manifest for {host}")
            self._load_oci_descriptor(chosen[0], tags, depth + 1)
            return
        if desc.media_type and desc.media_type not in oci.MANIFEST_TYPES:
            raise ArchiveError(f"{self.source.label}: unsupported manifest media type {desc.media_type}")
        manifest_bytes = self._read_verified(self._blob_member(desc.digest), desc.digest)
        try:
            manifest = json.loads(manifest_bytes)
            config_desc = oci.manifest_config(manifest)
            layers = oci.manifest_layers(manifest)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ArchiveError(f"{self.source.label}: malformed manifest {desc.digest}: {exc!r}") from exc
        config_bytes = self._read_verified(self._blob_member(config_desc.digest), config_desc.digest)
        config = self._parse_config(config_bytes, config_desc.digest)
        if len(oci.config_diff_ids(config)) != len(layers):
            raise ArchiveError(f"{self.source.label}: manifest {desc.digest} has {len(layers)} layers but its "
                               f"config lists {len(oci.config_diff_ids(config))} diff_ids")
        for layer, claimed in zip(layers, oci.config_diff_ids(config), strict=True):
            if not oci.is_digest(layer.digest):
                raise ArchiveError(f"{self.source.label}: unsupported layer digest {layer.digest!r}")
            actual = self._stage_layer(self._blob_member(layer.digest), layer.digest, layer.size)
            self._check_diff_id(f"the config {config_desc.digest}", layer.digest, claimed, actual)
        media_type = manifest.get("mediaType") or desc.media_type
        if media_type == oci.DOCKER_MANIFEST:
            # Rebuild as OCI: same config bytes (image ID kept) and same layer blobs.
            new_layers = [oci.Descriptor(oci.DOCKER_TO_OCI_LAYER.get(layer.media_type, layer.media_type), layer.digest,
                                         layer.size) for layer in layers]
            config_oci = oci.Descriptor(oci.OCI_CONFIG, config_desc.digest, len(config_bytes))
            manifest_bytes = oci.canonical_json(oci.make_manifest(config_oci, new_layers,
                                                                  manifest.get("annotations")))
        self.images.append(_PendingImage(manifest_bytes, config_bytes, tags))

    def _parse_config(self, data: bytes, digest: str) -> dict:
        try:
            config = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArchiveError(f"{self.source.label}: config {digest} is not valid JSON") from exc
        if not isinstance(config, dict) or not isinstance(config.get("rootfs", {}).get("diff_ids", []), list):
            raise ArchiveError(f"{self.source.label}: config {digest} is not an image config")
        return config

    # -- docker-archive --

    def load_docker(self) -> None:
        entries = self.source.read_json("manifest.json")
        if not isinstance(entries, list) or not entries:
            raise ArchiveError(f"{self.source.label}: manifest.json is not a list of images")
        layer_by_diff: dict[str, oci.Descriptor] = {}
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                    or not isinstance(entry.get("Layers"), list):
                raise ArchiveError(f"{self.source.label}: manifest.json entry lacks Config or Layers")
            config_name = entry["Config"]
            config_bytes = self.source.read_bytes(config_name)
            config_digest = oci.sha256_digest(config_bytes)
            named = _HEX64.findall(config_name)
            if named and "sha256:" + named[-1] != config_digest:
                raise ArchiveError(f"{self.source.label}: {config_name} does not match its digest",
                                   hint="the archive is corrupt or was modified")
            config = self._parse_config(config_bytes, config_digest)
            diff_ids = oci.config_diff_ids(config)
            if len(diff_ids) != len(entry["Layers"]):
                raise ArchiveError(f"{self.source.label}: {config_name} lists {len(diff_ids)} diff_ids but "
                                   f"manifest.json {len(entry['Layers'])} layers")
            layers = []
            for member, diff_id in zip(entry["Layers"], diff_ids, strict=True):
                if not isinstance(member, str) or not oci.is_digest(diff_id):
                    raise ArchiveError(f"{self.source.label}: malformed layer entry {member!r}")
                if diff_id not in layer_by_diff:
                    layer_by_diff[diff_id] = self._stage_docker_layer(member, diff_id)
                layers.append(layer_by_diff[diff_id])
            manifest = oci.make_manifest(oci.Descriptor(oci.OCI_CONFIG, config_digest, len(config_bytes)), layers)
            repo_tags = entry.get("RepoTags") or []
            if not isinstance(repo_tags, list):
                raise ArchiveError(f"{self.source.label}: RepoTags is not a list")
            self.images.append(_PendingImage(oci.canonical_json(manifest), config_bytes, self._tag_list(repo_tags)))

    def _stage_docker_layer(self, member: str, diff_id: str) -> oci.Descriptor:
        # Already in the store under this diff_id: reuse that blob (and its compression) as is.
        for stored_digest, media_type, size in self.store.layer_blobs(diff_id):
            return oci.Descriptor(oci.DOCKER_TO_OCI_LAYER.get(media_type, media_type), stored_digest, size)
        from builder.layer import detect_compression

        with self.source.open(member) as f:
            kind = detect_compression(f.read(6))
        try:
            if kind in ("none", "gzip", "zstd"):
                # Kept byte for byte; its diff_id is hashed while it is written (one read).
                with self.source.open(member) as f, self.staging.blob_writer(layer=True) as writer:
                    while chunk := f.read(_CHUNK):
                        writer.write(chunk)
                media_type = oci.oci_layer_media_type("uncompressed" if kind == "none" else kind)
            else:
                # bzip2/xz have no OCI media type: store the plain tar (its digest is the diff_id).
                with self.source.open(member) as f, self.staging.blob_writer(layer=True) as writer:
                    stream = open_layer_stream(f)
                    while chunk := stream.read(_CHUNK):
                        writer.write(chunk)
                media_type = oci.OCI_LAYER_TAR
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveError(f"{self.source.label}: cannot read {member}: {exc}") from exc
        digest, size, actual = writer.digest, writer.size, writer.diff_id
        assert digest is not None
        if actual is None:
            raise ArchiveError(f"{self.source.label}: layer {member} is not a readable layer: {writer.layer_error}",
                               hint="the archive is corrupt or was modified")
        self._check_diff_id("the config", member, diff_id, actual)
        self.staged[digest] = (media_type, size)
        self.layer_diff_ids[digest] = actual
        return oci.Descriptor(media_type, digest, size)


def _digest_stream(stream: BinaryIO) -> str:
    from builder.image.blobfiles import HashingReader

    hashing = HashingReader(stream)
    hashing.drain()
    return hashing.digest()


def load_archive(store: Store, path: Path | str, *, name: str | None = None) -> list[tuple[str | None, str]]:
    """Load a docker-archive or OCI archive/layout (tar, compressed tar, or directory).

    Returns (tag or None, manifest digest) per loaded image and tag. `name` is used for OCI
    entries whose ref.name annotation is only a tag (`v1` -> `<name>:v1`)."""
    path = Path(path)
    results: list[tuple[str | None, str]] = []
    with store.tempdir(prefix="load-") as work, store.staging() as staging:
        source = _open_source(path, work)
        try:
            loader = _Loader(store, staging, source, name)
            if source.exists("oci-layout") and source.exists("index.json"):
                loader.load_oci()
            elif source.exists("manifest.json"):
                loader.load_docker()
            else:
                raise ArchiveError(f"{path} is neither a docker-archive nor an OCI layout",
                                   hint="expected manifest.json (docker save) or oci-layout and index.json")
            if not loader.images:
                raise ArchiveError(f"{path} holds no images")
        except (RecursionError, KeyError, TypeError, AttributeError) as exc:
            raise ArchiveError(f"{path}: malformed archive ({type(exc).__name__}: {exc})") from exc
        finally:
            source.close()  # type: ignore[attr-defined]
        staging.publish()
        for image in loader.images:
            try:
                # Unpacked now, as `docker load` does, so the first build on it starts at once; a
                # layer that will not unpack fails the load before the image is recorded.
                store.unpack_layers(json.loads(image.manifest_bytes), json.loads(image.config_bytes))
                record = store.save_image_bytes(image.manifest_bytes, image.config_bytes)
            except StoreError as exc:
                raise ArchiveError(f"{path}: {exc.message}", hint=exc.hint) from exc
            for tag in image.tags:
                store.tag(tag, record.manifest_digest)
                results.append((tag, record.manifest_digest))
            if not image.tags:
                results.append((None, record.manifest_digest))
    return results


# --- import of a root file system ----------------------------------------------------------------


def _newest_mtime(root: Path) -> int:
    """The latest mtime below `root` (its own is not part of a layer): depends only on the rootfs."""
    newest = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            try:
                newest = max(newest, int(os.lstat(os.path.join(dirpath, name)).st_mtime))
            except FileNotFoundError:
                continue
    return newest


def import_rootfs(store: Store, source: Path | str, ref: str | None = None, *,
                  edit_config: Callable[[dict], None] | None = None,
                  message: str | None = None, platform: Platform | None = None,
                  source_date_epoch: int | None = None) -> ImageRecord:
    """Like `docker import`: a rootfs tar (any compression) or directory becomes a one-layer image.
    `edit_config` may change the config before it is stored (`--change`).

    Deterministic: the layer goes through write_layer, and the image's `created` time is
    SOURCE_DATE_EPOCH when set, else the newest mtime in the rootfs (not the time of the import),
    so importing the same rootfs twice gives the same image digest."""
    source = Path(source)
    if source_date_epoch is None:
        source_date_epoch = oci.source_date_epoch_from_env()

    def config_for(root: Path, diff_id: str) -> dict:
        when = source_date_epoch if source_date_epoch is not None else _newest_mtime(root)
        created = oci.format_time(when)
        return oci.make_image_config(
            platform=platform, created=created, diff_ids=[diff_id],
            history=[oci.history_entry("", created=created, comment=message or f"Imported from {source.name}")],
        )

    if not (source.is_dir() or source.is_file()):
        raise ArchiveError(f"cannot import {source}: no such file or directory")
    with store.tempdir(prefix="import-") as work:
        # The store takes a private copy in as the layer's snapshot (the user's dir is left as it is).
        root = work / "rootfs"
        if source.is_dir():
            from builder.snapshot.view import flatten

            flatten([source], root, hardlink=False)
        else:
            root.mkdir(mode=0o755)
            with open(source, "rb") as f:
                unpack_layer(f, root)
        config = config_for(root, "")
        digests = store.put_layer_from_dir(root, source_date_epoch=source_date_epoch)
        config["rootfs"]["diff_ids"] = [digests.diff_id]
    if edit_config is not None:
        edit_config(config)
    layer = oci.Descriptor(digests.media_type, digests.digest, digests.size)
    record = store.save_image(oci.make_manifest_for_config(config, [layer]), config)
    if ref:
        store.tag(ref, record.manifest_digest)
        record.tags = store.load_image(record.manifest_digest).tags
    return record
