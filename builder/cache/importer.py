"""`--cache-from`: look step keys up in cache records elsewhere, in the order the sources were given.

A source's record is read once, on the first step the local cache misses; a source that cannot
be read (missing, unreachable, not a cache, corrupt) is reported once as a warning and then left
out, so the build goes on as if it had not been named. A hit whose layer blob the source no
longer has is a miss for that step. A hit's layer is not downloaded here: `adopt` tells the
store where the blob is (builder.image.lazy), and the bytes move only when something reads them.
"""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from builder.cache.layout import Layout, LayoutError
from builder.cache.record import (
    INLINE_ANNOTATION,
    RECORD_LIMIT,
    CacheRecord,
    RecordEntry,
    RecordError,
    RecordLayer,
    is_record_manifest,
    parse_inline,
    parse_record,
)
from builder.cache.spec import CacheSpec
from builder.errors import BuildError
from builder.image import oci
from builder.image.store import Store

CONFIG_LIMIT = 4 * 1024 * 1024
Warn = Callable[[str], None]


class CacheSource:
    """Where one `--cache-from` points; subclasses read a registry or an OCI layout."""

    def __init__(self, spec: CacheSpec) -> None:
        self.spec = spec

    @property
    def label(self) -> str:
        return self.spec.label

    def load(self, platform: str) -> CacheRecord:
        raise NotImplementedError

    def has_blob(self, digest: str) -> bool:
        raise NotImplementedError

    def origin(self) -> dict[str, Any]:
        """Where the store fetches a blob of this source later (see builder.image.lazy)."""
        raise NotImplementedError

    def _record_from(self, manifest: dict, read_blob: Callable[[str, int], bytes]) -> CacheRecord:
        """A record manifest's steps, or an image's inline steps; anything else is not a cache."""
        if is_record_manifest(manifest):
            config = oci.manifest_config(manifest)
            if config.size > RECORD_LIMIT:
                raise RecordError(f"its record is {config.size} bytes, more than the {RECORD_LIMIT} read")
            return parse_record(manifest, read_blob(config.digest, config.size))
        annotation = (manifest.get("annotations") or {}).get(INLINE_ANNOTATION)
        if isinstance(annotation, str):
            config = oci.manifest_config(manifest)
            if config.size > CONFIG_LIMIT:
                raise RecordError(f"its image config is {config.size} bytes, more than the {CONFIG_LIMIT} read")
            try:
                image_config = oci_json(read_blob(config.digest, config.size))
            except ValueError as exc:
                raise RecordError(f"its image config is not JSON ({exc})") from None
            return parse_inline(annotation, manifest, image_config)
        raise RecordError("it holds no build cache (neither a cache record nor an image with an inline cache)")


def oci_json(data: bytes) -> dict:
    import json

    parsed = json.loads(data)
    if not isinstance(parsed, dict):
        raise ValueError("not a JSON object")
    return parsed


class RegistrySource(CacheSource):
    def __init__(self, spec: CacheSpec, insecure: Iterable[str]) -> None:
        from builder.image.reference import parse_reference
        from builder.registry import RegistryClient

        super().__init__(spec)
        assert spec.ref is not None
        self.reference = parse_reference(spec.ref)
        self.insecure = tuple(insecure) + ((self.reference.registry,) if spec.insecure else ())
        self.client = RegistryClient(self.reference.registry, insecure=self.insecure)

    def load(self, platform: str) -> CacheRecord:
        from builder.registry.pulling import resolve_image_manifest

        reference = self.reference
        target = reference.digest or reference.tag_or_latest()
        manifest = resolve_image_manifest(self.client, reference.repository, target, platform, self.label)
        return self._record_from(manifest.json(), self._read_small)

    def _read_small(self, digest: str, size: int) -> bytes:
        sink = io.BytesIO()
        self.client.fetch_blob(self.reference.repository, digest, sink, size)
        return sink.getvalue()

    def has_blob(self, digest: str) -> bool:
        return self.client.blob_exists(self.reference.repository, digest)

    def origin(self) -> dict[str, Any]:
        return {"type": "registry", "registry": self.reference.registry, "repository": self.reference.repository,
                "insecure": self.reference.registry in self.insecure}


class LayoutSource(CacheSource):
    def __init__(self, spec: CacheSpec) -> None:
        super().__init__(spec)
        assert spec.path is not None
        self.layout = Layout(spec.path)

    def load(self, platform: str) -> CacheRecord:
        index = self.layout.read_index()
        manifests = [entry for entry in index.get("manifests") or [] if isinstance(entry, dict)]
        named = [entry for entry in manifests
                 if (entry.get("annotations") or {}).get(oci.ANNOTATION_REF_NAME) == self.spec.tag]
        if not named and len(manifests) == 1 and not (manifests[0].get("annotations") or {}).get(oci.ANNOTATION_REF_NAME):
            named = manifests
        if not named:
            raise RecordError(f"its index.json names no record {self.spec.tag!r}")
        digest = named[-1].get("digest")
        if not isinstance(digest, str) or not oci.is_digest(digest):
            raise RecordError("its index.json entry has no valid digest")
        try:
            manifest = oci_json(self.layout.read_blob(digest, CONFIG_LIMIT))
        except ValueError as exc:
            raise RecordError(f"its manifest is not JSON ({exc})") from None
        return self._record_from(manifest, lambda blob, _size: self.layout.read_blob(blob, RECORD_LIMIT))

    def has_blob(self, digest: str) -> bool:
        return self.layout.has_blob(digest)

    def origin(self) -> dict[str, Any]:
        return {"type": "oci-layout", "path": str(self.layout.path.absolute())}


@dataclass(frozen=True)
class CacheHit:
    entry: RecordEntry
    source: CacheSource


def make_source(spec: CacheSpec, insecure: Iterable[str]) -> CacheSource:
    if spec.type == "registry":
        return RegistrySource(spec, insecure)
    return LayoutSource(spec)


class CacheImporter:
    """The `--cache-from` sources of one build, shared by its stage threads."""

    def __init__(self, store: Store, specs: Iterable[CacheSpec], *, platform: str, insecure: Iterable[str] = (),
                 warn: Warn) -> None:
        self.store = store
        self.specs = tuple(specs)
        self.platform = platform
        self.insecure = tuple(insecure)
        self.warn = warn
        self._sources: list[CacheSource | None] = []
        self._records: dict[int, CacheRecord | None] = {}
        self._present: dict[tuple[int, str], bool] = {}
        self._lost_warned: set[int] = set()
        self._lock = threading.Lock()

    def _record(self, index: int) -> tuple[CacheSource, CacheRecord] | None:
        with self._lock:  # each source is read once; other stages wait for that one read
            if index not in self._records:
                self._records[index] = self._load(index)
            record = self._records[index]
            source = self._sources[index] if index < len(self._sources) else None
        return None if record is None or source is None else (source, record)

    def _load(self, index: int) -> CacheRecord | None:
        spec = self.specs[index]
        while len(self._sources) <= index:
            self._sources.append(None)
        try:
            source = make_source(spec, self.insecure)
            self._sources[index] = source
            return source.load(self.platform)
        except (BuildError, RecordError, LayoutError, OSError) as exc:
            self.warn(f"cache {spec.label} cannot be used: {_reason(exc)}; building without it")
            return None

    def lookup(self, key: str) -> CacheHit | None:
        """The first source whose record has `key` and still holds the step's layer blob."""
        for index in range(len(self.specs)):
            found = self._record(index)
            if found is None:
                continue
            source, record = found
            entry = record.steps.get(key)
            if entry is None:
                continue
            if entry.layer is not None and not self._has_blob(index, source, entry.layer):
                continue
            return CacheHit(entry, source)
        return None

    def _has_blob(self, index: int, source: CacheSource, layer: RecordLayer) -> bool:
        with self._lock:
            known = self._present.get((index, layer.digest))
        if known is not None:
            return known
        try:
            present = source.has_blob(layer.digest)
        except (BuildError, OSError) as exc:
            present = False
            reason = _reason(exc)
        else:
            reason = f"it no longer has layer {layer.digest}"
        with self._lock:
            self._present[(index, layer.digest)] = present
            first = not present and index not in self._lost_warned
            if first:
                self._lost_warned.add(index)
        if first:
            self.warn(f"cache {source.label}: {reason}; the steps that need it are built")
        return present

    def adopt(self, hit: CacheHit) -> bool:
        """Make a hit's layer usable by this store without downloading it; False (a warning
        said why) when the store refuses it."""
        layer = hit.entry.layer
        if layer is None:
            return True
        origin = hit.source.origin()
        try:
            self.store.note_lazy_layer(layer.digest, diff_id=layer.diff_id, media_type=layer.media_type,
                                       size=layer.size, origin=origin)
        except BuildError as exc:
            self.warn(f"cache {hit.source.label}: layer {layer.digest} cannot be used: {_reason(exc)}")
            return False
        if origin["type"] == "registry":
            from builder.registry.sources import remember_source

            # A push of the image to the same registry mounts the blob from the cache's repository.
            remember_source(self.store, layer.digest, origin["registry"], origin["repository"])
        return True


def _reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return message.splitlines()[0] if message else type(exc).__name__
