"""OCI and Docker image types: media types, descriptors, canonical JSON, config and manifest builders.

Manifests and configs we create are always serialised with `canonical_json` so the same content
gives the same bytes, hence the same digest, on every machine. Blobs that come from elsewhere
(registries, archives) keep their original bytes: re-serialising them would change their digests.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from builder.errors import BuildError
from builder.platforms import Platform

# --- media types -------------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
LAYER_TYPES = frozenset({
    OCI_LAYER_TAR, OCI_LAYER_GZIP, OCI_LAYER_ZSTD,
    OCI_LAYER_NONDIST_TAR, OCI_LAYER_NONDIST_GZIP, OCI_LAYER_NONDIST_ZSTD,
    DOCKER_LAYER_TAR, DOCKER_LAYER_GZIP, DOCKER_LAYER_ZSTD, DOCKER_FOREIGN_LAYER,
})

# Docker schema2 layer type -> the OCI one with the same bytes (used when importing docker images).
DOCKER_TO_OCI_LAYER = {
    DOCKER_LAYER_TAR: OCI_LAYER_TAR,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_LAYER_ZSTD: OCI_LAYER_ZSTD,
    DOCKER_FOREIGN_LAYER: OCI_LAYER_NONDIST_GZIP,
}
OCI_TO_DOCKER_LAYER = {
    OCI_LAYER_TAR: DOCKER_LAYER_TAR,
    OCI_LAYER_GZIP: DOCKER_LAYER_GZIP,
    OCI_LAYER_ZSTD: DOCKER_LAYER_ZSTD,
    OCI_LAYER_NONDIST_GZIP: DOCKER_FOREIGN_LAYER,
}

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"

LAYOUT_VERSION = "1.0.0"


def layer_compression(media_type: str) -> str:
    """'gzip', 'zstd' or 'uncompressed' for a layer media type (OCI or Docker)."""
    if media_type.endswith("gzip"):
        return "gzip"
    if media_type.endswith("zstd"):
        return "zstd"
    return "uncompressed"


def oci_layer_media_type(compression: str) -> str:
    return {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "uncompressed": OCI_LAYER_TAR}[compression]


# --- canonical JSON and digests ------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """The single serialisation of manifests/configs we write: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: str) -> bool:
    """True for a well-formed `sha256:<64 lowercase hex>` digest."""
    if not value.startswith("sha256:") or len(value) != 71:
        return False
    return all(c in "0123456789abcdef" for c in value[7:])


# --- descriptors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] | None = None
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Descriptor":
        plat = obj.get("platform")
        return cls(
            media_type=str(obj.get("mediaType", "")),
            digest=str(obj["digest"]),
            size=int(obj["size"]),
            annotations=dict(obj["annotations"]) if obj.get("annotations") else None,
            platform=Platform.from_json(plat) if isinstance(plat, Mapping) else None,
        )

    @classmethod
    def for_bytes(cls, media_type: str, data: bytes, **kwargs: Any) -> "Descriptor":
        return cls(media_type=media_type, digest=sha256_digest(data), size=len(data), **kwargs)


# --- config --------------------------------------------------------------------------------------


def format_time(epoch: float | int | None = None) -> str:
    """RFC 3339 in UTC with a `Z`, seconds precision (what Docker/BuildKit write for clamped times)."""
    if epoch is None:
        epoch = time.time()
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# The last second of year 9999: OCI timestamps are RFC 3339, and Python's datetime ends there.
MAX_SOURCE_DATE_EPOCH = 253402300799


def check_source_date_epoch(epoch: int, what: str) -> int:
    if not 0 <= epoch <= MAX_SOURCE_DATE_EPOCH:
        raise BuildError(f"{what}={epoch} is out of range", hint=f"give seconds since 1970, from 0 to {MAX_SOURCE_DATE_EPOCH}")
    return epoch


def source_date_epoch_from_env() -> int | None:
    """$SOURCE_DATE_EPOCH as seconds; None when unset or empty; a BuildError when malformed
    (ignoring it would silently give a build that is not reproducible)."""
    return parse_source_date_epoch(os.environ.get("SOURCE_DATE_EPOCH", ""), "SOURCE_DATE_EPOCH")


def parse_source_date_epoch(text: str, what: str) -> int | None:
    """A SOURCE_DATE_EPOCH given as text (the environment, a build arg); None when empty."""
    value = text.strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 12:  # int() refuses "²" and 5000 digits
        raise BuildError(f"{what}={value[:40]!r} is not a valid number of seconds",
                         hint="unset it or give an integer")
    return check_source_date_epoch(int(value), what)


# The keys of the OCI config's "config" object, in the spelling the spec uses.
RUNTIME_CONFIG_KEYS = (
    "User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
    "StopSignal", "Healthcheck", "Shell", "OnBuild", "ArgsEscaped",
)


def make_image_config(
    *,
    platform: Platform | None = None,
    created: str | None = None,
    env: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    entrypoint: Sequence[str] | None = None,
    working_dir: str | None = None,
    user: str | None = None,
    labels: Mapping[str, str] | None = None,
    exposed_ports: Iterable[str] | None = None,
    volumes: Iterable[str] | None = None,
    stop_signal: str | None = None,
    healthcheck: Mapping[str, Any] | None = None,
    shell: Sequence[str] | None = None,
    on_build: Sequence[str] | None = None,
    diff_ids: Sequence[str] = (),
    history: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A new OCI image config. Empty runtime settings are left out, as Docker does."""
    plat = platform or Platform.host()
    runtime: dict[str, Any] = {}
    if user:
        runtime["User"] = user
    if exposed_ports:
        runtime["ExposedPorts"] = {p: {} for p in exposed_ports}
    if env:
        runtime["Env"] = list(env)
    if entrypoint is not None:
        runtime["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        runtime["Cmd"] = list(cmd)
    if volumes:
        runtime["Volumes"] = {v: {} for v in volumes}
    if working_dir:
        runtime["WorkingDir"] = working_dir
    if labels:
        runtime["Labels"] = dict(labels)
    if stop_signal:
        runtime["StopSignal"] = stop_signal
    if healthcheck:
        runtime["Healthcheck"] = dict(healthcheck)
    if shell:
        runtime["Shell"] = list(shell)
    if on_build:
        runtime["OnBuild"] = list(on_build)
    return image_config(runtime, platform=plat, created=created, diff_ids=diff_ids, history=history)


def image_config(
    runtime: Mapping[str, Any],
    *,
    platform: Platform,
    created: str | None = None,
    diff_ids: Sequence[str] = (),
    history: Sequence[Mapping[str, Any]] = (),
    author: str | None = None,
) -> dict[str, Any]:
    """An OCI image config around a runtime ("config") object taken as it is."""
    config: dict[str, Any] = {
        "architecture": platform.architecture,
        "os": platform.os,
        "config": dict(runtime),
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [dict(h) for h in history],
    }
    if platform.variant:
        config["variant"] = platform.variant
    if created:
        config["created"] = created
    if author:
        config["author"] = author
    return config


def history_entry(
    created_by: str, *, created: str | None = None, comment: str | None = None, empty_layer: bool = False
) -> dict[str, Any]:
    entry: dict[str, Any] = {"created_by": created_by}
    if created:
        entry["created"] = created
    if comment:
        entry["comment"] = comment
    if empty_layer:
        entry["empty_layer"] = True
    return entry


def add_layer(config: dict[str, Any], diff_id: str, created_by: str, *, created: str | None = None,
              comment: str | None = None) -> None:
    """Append a layer's diff_id and its history entry to a config (in place)."""
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []}).setdefault("diff_ids", []).append(diff_id)
    config.setdefault("history", []).append(history_entry(created_by, created=created, comment=comment))


def add_empty_history(config: dict[str, Any], created_by: str, *, created: str | None = None,
                      comment: str | None = None) -> None:
    """Record a metadata-only step (ENV, CMD, ...) in the history with empty_layer: true."""
    config.setdefault("history", []).append(
        history_entry(created_by, created=created, comment=comment, empty_layer=True))


def config_diff_ids(config: Mapping[str, Any]) -> list[str]:
    return list((config.get("rootfs") or {}).get("diff_ids") or [])


# --- manifest and index --------------------------------------------------------------------------


def make_manifest(
    config: Descriptor,
    layers: Sequence[Descriptor],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return manifest


def make_manifest_for_config(
    config: Mapping[str, Any], layers: Sequence[Descriptor], annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A manifest whose config descriptor is the canonical JSON of `config` (what Store.save_image stores)."""
    return make_manifest(Descriptor.for_bytes(OCI_CONFIG, canonical_json(config)), layers, annotations)


def make_index(manifests: Sequence[Descriptor], annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    index: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [m.to_json() for m in manifests],
    }
    if annotations:
        index["annotations"] = dict(annotations)
    return index


def manifest_layers(manifest: Mapping[str, Any]) -> list[Descriptor]:
    return [Descriptor.from_json(layer) for layer in manifest.get("layers") or []]


def manifest_config(manifest: Mapping[str, Any]) -> Descriptor:
    return Descriptor.from_json(manifest["config"])

