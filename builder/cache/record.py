"""The cache record: an OCI artifact that maps step keys to what each step added.

A record is an OCI image manifest whose `artifactType` is `ARTIFACT_TYPE` and whose config blob
(`RECORD_MEDIA_TYPE`) is canonical JSON:

    {"format": "builder.cache.v1",
     "steps": {"<step key>": {"chain": "<chain id after the step>",
                              "layer": null | {"digest", "diff_id", "size", "mediaType"},
                              "history": {"created": ..., "created_by": ..., "empty_layer": true?}}}}

Its `layers` are every layer blob the steps name, so a registry keeps them alive and a copy of the
artifact (`skopeo copy`, `oras cp`) carries them. The inline form (`INLINE_ANNOTATION` on an image
manifest) has the same "steps", but a layer names only its diff_id: the blob is the image's own
layer with that diff_id. docs/CACHE.md describes the whole format.

Everything read here comes from elsewhere and is checked: a malformed entry is dropped (a miss),
never trusted in part.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from builder.image import oci

FORMAT = "builder.cache.v1"
ARTIFACT_TYPE = "application/vnd.builder.cache.v1"
RECORD_MEDIA_TYPE = "application/vnd.builder.cache.record.v1+json"
INLINE_ANNOTATION = "builder.cache.v1"
RECORD_LIMIT = 32 * 1024 * 1024  # bytes of a record's config blob we are willing to read
_HISTORY_STRINGS = ("created", "created_by", "comment", "author")


class RecordError(Exception):
    """A record that cannot be used at all (wrong type, unreadable JSON): a warning, then no cache."""


@dataclass(frozen=True)
class RecordLayer:
    digest: str  # the blob (compressed as exported)
    diff_id: str  # what the record claims its uncompressed content hashes to
    size: int
    media_type: str

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "diff_id": self.diff_id, "size": self.size, "mediaType": self.media_type}

    def descriptor(self) -> oci.Descriptor:
        return oci.Descriptor(self.media_type, self.digest, self.size)


@dataclass(frozen=True)
class RecordEntry:
    chain: str
    layer: RecordLayer | None
    history: dict[str, Any]

    def to_json(self, *, inline: bool = False) -> dict[str, Any]:
        layer: Any = None
        if self.layer is not None:
            layer = {"diff_id": self.layer.diff_id} if inline else self.layer.to_json()
        return {"chain": self.chain, "layer": layer, "history": dict(self.history)}

    def cached_step_json(self) -> dict[str, Any]:
        """The solver's cache-entry form of this step (solve.solver.CachedStep)."""
        layer = None
        if self.layer is not None:
            layer = {"diff_id": self.layer.diff_id, "digest": self.layer.digest, "size": self.layer.size,
                     "media_type": self.layer.media_type}
        return {"chain": self.chain, "layer": layer, "history": dict(self.history)}


@dataclass
class CacheRecord:
    steps: dict[str, RecordEntry]

    def layers(self) -> list[RecordLayer]:
        """Each blob once, in the order steps name them (sorted keys: the same record, the same bytes)."""
        found: dict[str, RecordLayer] = {}
        for key in sorted(self.steps):
            layer = self.steps[key].layer
            if layer is not None:
                found.setdefault(layer.digest, layer)
        return list(found.values())

    # --- writing ---

    def config_bytes(self) -> bytes:
        steps = {key: entry.to_json() for key, entry in sorted(self.steps.items())}
        return oci.canonical_json({"format": FORMAT, "steps": steps})

    def manifest(self, config: bytes) -> dict[str, Any]:
        return {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": oci.Descriptor.for_bytes(RECORD_MEDIA_TYPE, config).to_json(),
            "layers": [layer.descriptor().to_json() for layer in self.layers()],
        }

    def inline_annotation(self) -> str:
        steps = {key: entry.to_json(inline=True) for key, entry in sorted(self.steps.items())}
        return oci.canonical_json({"format": FORMAT, "steps": steps}).decode()


# --- reading -------------------------------------------------------------------------------------


def is_record_manifest(manifest: Mapping[str, Any]) -> bool:
    config = manifest.get("config")
    return isinstance(config, Mapping) and config.get("mediaType") == RECORD_MEDIA_TYPE


def parse_record(manifest: Mapping[str, Any], config: bytes) -> CacheRecord:
    """A record from its manifest and config blob; entries naming a blob the manifest does not
    list, or malformed in any way, are dropped."""
    listed = {}
    for raw in manifest.get("layers") or []:
        layer = _descriptor(raw)
        if layer is not None:
            listed[layer.digest] = layer
    steps = _steps(config)
    found: dict[str, RecordEntry] = {}
    for key, raw in steps.items():
        entry = _entry(key, raw)
        if entry is None:
            continue
        if entry.layer is not None:
            descriptor = listed.get(entry.layer.digest)
            if descriptor is None or descriptor.size != entry.layer.size:
                continue
        found[key] = entry
    return CacheRecord(found)


def parse_inline(annotation: str, manifest: Mapping[str, Any], image_config: Mapping[str, Any]) -> CacheRecord:
    """An inline record; a layer is the image's own layer with the diff_id the entry names."""
    try:
        diff_ids = oci.config_diff_ids(image_config)
        layers = oci.manifest_layers(manifest)
    except Exception as exc:  # noqa: BLE001 - anything malformed in an image from elsewhere
        raise RecordError(f"the image's manifest or config is malformed ({exc})") from None
    if len(diff_ids) != len(layers):
        raise RecordError("the image's manifest and config list different numbers of layers")
    by_diff_id = {diff_id: layer for diff_id, layer in zip(diff_ids, layers, strict=True)}
    found: dict[str, RecordEntry] = {}
    for key, raw in _steps(annotation.encode()).items():
        if not isinstance(raw, Mapping):
            continue
        layer_raw = raw.get("layer")
        resolved: Any = None
        if layer_raw is not None:
            diff_id = layer_raw.get("diff_id") if isinstance(layer_raw, Mapping) else None
            blob = by_diff_id.get(diff_id) if isinstance(diff_id, str) else None
            if blob is None:
                continue
            resolved = {"digest": blob.digest, "diff_id": diff_id, "size": blob.size, "mediaType": blob.media_type}
        entry = _entry(key, {**raw, "layer": resolved})
        if entry is not None:
            found[key] = entry
    return CacheRecord(found)


def _steps(data: bytes) -> Mapping[str, Any]:
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"the record is not JSON ({exc})") from None
    if not isinstance(parsed, dict) or parsed.get("format") != FORMAT:
        found = parsed.get("format") if isinstance(parsed, dict) else None
        raise RecordError(f"the record's format is {found!r}, not {FORMAT!r}")
    steps = parsed.get("steps")
    if not isinstance(steps, dict):
        raise RecordError("the record has no steps")
    return steps


def _descriptor(raw: Any) -> RecordLayer | None:
    if not isinstance(raw, Mapping):
        return None
    digest, size, media_type = raw.get("digest"), raw.get("size"), raw.get("mediaType")
    if not (isinstance(digest, str) and oci.is_digest(digest) and isinstance(size, int)
            and not isinstance(size, bool) and size >= 0 and media_type in oci.LAYER_TYPES):
        return None
    return RecordLayer(digest, "", size, str(media_type))


def _entry(key: Any, raw: Any) -> RecordEntry | None:
    if not (isinstance(key, str) and oci.is_digest(key) and isinstance(raw, Mapping)):
        return None
    chain, history, layer_raw = raw.get("chain"), raw.get("history"), raw.get("layer")
    if not (isinstance(chain, str) and oci.is_digest(chain) and isinstance(history, Mapping)):
        return None
    clean = _history(history)
    if clean is None:
        return None
    layer = None
    if layer_raw is not None:
        layer = _descriptor(layer_raw)
        diff_id = layer_raw.get("diff_id") if isinstance(layer_raw, Mapping) else None
        if layer is None or not (isinstance(diff_id, str) and oci.is_digest(diff_id)):
            return None
        layer = RecordLayer(layer.digest, diff_id, layer.size, layer.media_type)
    if clean.get("empty_layer", False) != (layer is None):
        return None  # a history entry must say whether the step made a layer, and truly
    return RecordEntry(chain, layer, clean)


def _history(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    clean: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _HISTORY_STRINGS and isinstance(value, str) and len(value) <= 1 << 20:
            clean[name] = value
        elif name == "empty_layer" and isinstance(value, bool):
            if value:
                clean[name] = True
        else:
            return None
    return clean


def entries_from_steps(steps: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, RecordEntry]:
    """Record entries from the solver's (key, CachedStep JSON) pairs; layers keep their local blob
    until the exporter swaps in the blob it ships."""
    found: dict[str, RecordEntry] = {}
    for key, value in steps:
        layer_raw = value.get("layer")
        layer = None
        if layer_raw is not None:
            layer = RecordLayer(layer_raw["digest"], layer_raw["diff_id"], int(layer_raw["size"]),
                                layer_raw["media_type"])
        history = {name: item for name, item in dict(value.get("history") or {}).items()}
        found[key] = RecordEntry(str(value["chain"]), layer, history)
    return found
