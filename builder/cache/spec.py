"""`--cache-to` and `--cache-from` specifications, BuildKit's syntax:

    --cache-to   type=registry,ref=HOST/REPO:TAG[,mode=min|max][,compression=gzip|zstd|uncompressed]
                 (default: the build's --compression)
                 [,compression-level=N][,force-compression=true][,ignore-error=false][,insecure=true]
    --cache-to   type=local,dest=DIR[,tag=TAG][,mode=...][,compression=...]
    --cache-to   type=inline
    --cache-from type=registry,ref=REF[,insecure=true]   (REF alone means the same)
    --cache-from type=local,src=DIR[,tag=TAG]

A mistake in a specification is a `CacheError` before any work; a cache that turns out to be
missing or unreadable when the build runs is only a warning (see docs/CACHE.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from builder.errors import CacheError
from builder.image.reference import InvalidReference, parse_reference
from builder.specfields import parse_spec_bool, parse_spec_fields

CACHE_TYPES = ("registry", "local", "inline")
MODES = ("min", "max")
DEFAULT_LOCAL_TAG = "latest"
_LAYER_KEYS = {"compression", "compression-level", "force-compression"}
_TO_KEYS = {
    "registry": {"type", "ref", "mode", "ignore-error", "insecure", *_LAYER_KEYS},
    "local": {"type", "dest", "tag", "mode", "ignore-error", *_LAYER_KEYS},
    "inline": {"type", "mode"},
}
_FROM_KEYS = {
    "registry": {"type", "ref", "insecure"},
    "local": {"type", "src", "tag"},
}


@dataclass(frozen=True)
class CacheSpec:
    """One `--cache-to` or `--cache-from` value, checked."""

    type: str  # registry | local | inline
    text: str  # as the user wrote it (shown in warnings and --explain-cache)
    ref: str | None = None  # registry: the cache's image reference
    path: str | None = None  # local: dest= (export) or src= (import)
    tag: str = DEFAULT_LOCAL_TAG  # local: the name of the record in the layout's index.json
    mode: str = "min"
    # None: the build's own --compression (and level), so the cache and the image share blobs
    compression: str | None = None
    compression_level: int | None = None
    force_compression: bool = False
    ignore_error: bool = True  # export failures are warnings unless ignore-error=false
    insecure: bool = False

    @property
    def label(self) -> str:
        """How progress and --explain-cache name this cache."""
        if self.type == "registry":
            return f"registry {self.ref}"
        if self.type == "local":
            return f"local {self.path}" + ("" if self.tag == DEFAULT_LOCAL_TAG else f" ({self.tag})")
        return "inline"


def parse_cache_to(text: str) -> CacheSpec:
    return _parse(text, export=True)


def parse_cache_from(text: str) -> CacheSpec:
    return _parse(text, export=False)


def _parse(text: str, *, export: bool) -> CacheSpec:
    option = "--cache-to" if export else "--cache-from"
    stripped = text.strip()
    if not stripped:
        raise CacheError(f"empty {option} value", hint=f"e.g. {option} type=registry,ref=registry.example/app:cache")
    if "=" not in stripped:
        attrs = {"type": "registry", "ref": stripped}  # BuildKit's shorthand: a reference alone
    else:
        attrs = _fields(stripped, option)
    kind = attrs.get("type", "").strip().lower()
    if not kind:
        raise CacheError(f"{option} {text!r} has no type", hint="start with type=registry, type=local or type=inline")
    known = _TO_KEYS if export else _FROM_KEYS
    if kind not in known:
        hint = "use type=registry, type=local or type=inline" if export else "use type=registry or type=local"
        if kind == "inline" and not export:
            hint = "an inline cache travels in an image: write --cache-from IMAGE (or type=registry,ref=IMAGE)"
        raise CacheError(f"unsupported cache type {kind!r} in {option} {text!r}", hint=hint)
    unknown = sorted(set(attrs) - known[kind])
    if unknown:
        raise CacheError(f"unknown option {unknown[0]!r} for {option} type={kind}",
                         hint="valid options: " + ", ".join(sorted(known[kind] - {"type"})))
    values: dict = {"type": kind, "text": stripped}
    if kind == "registry":
        values["ref"] = _reference(attrs, option, export)
        if "insecure" in attrs:
            values["insecure"] = _bool(attrs["insecure"], "insecure", option)
    elif kind == "local":
        key = "dest" if export else "src"
        path = attrs.get(key, "").strip()
        if not path:
            raise CacheError(f"{option} type=local needs {key}=DIR", hint=f"e.g. {option} type=local,{key}=.cache/build")
        values["path"] = path
        if "tag" in attrs:
            values["tag"] = _local_tag(attrs["tag"], option)
    if export:
        values.update(_export_options(attrs, kind, option))
    return CacheSpec(**values)


def _fields(text: str, option: str) -> dict[str, str]:
    return {key: value.strip() for key, value in parse_spec_fields(text, f"{option} {text!r}", CacheError).items()}


def _reference(attrs: dict[str, str], option: str, export: bool) -> str:
    ref = attrs.get("ref", "").strip()
    if not ref:
        raise CacheError(f"{option} type=registry needs ref=HOST/REPOSITORY:TAG",
                         hint=f"e.g. {option} type=registry,ref=registry.example/app:buildcache")
    try:
        parsed = parse_reference(ref)
    except InvalidReference as exc:
        raise CacheError(f"invalid cache reference {ref!r} in {option}: {exc.message}", hint=exc.hint) from None
    if export and parsed.digest:
        raise CacheError(f"{option} ref={ref}: a cache is written under a tag, not a digest",
                         hint="name a tag, e.g. ref=registry.example/app:buildcache")
    return ref


def _local_tag(value: str, option: str) -> str:
    tag = value.strip()
    if not tag or len(tag) > 128 or not all(c.isascii() and (c.isalnum() or c in "._-") for c in tag):
        raise CacheError(f"invalid tag {value!r} in {option}", hint="letters, digits, '.', '_' and '-' only")
    return tag


def _export_options(attrs: dict[str, str], kind: str, option: str) -> dict:
    from builder.image.variants import COMPRESSIONS, LEVEL_RANGES

    values: dict = {}
    if "mode" in attrs:
        mode = attrs["mode"].lower()
        if mode not in MODES:
            raise CacheError(f"invalid mode {attrs['mode']!r} in {option}", hint="use mode=min or mode=max")
        if kind == "inline" and mode == "max":
            raise CacheError("an inline cache holds the final image's steps only (mode=min)",
                             hint="export every stage with --cache-to type=registry,mode=max or type=local,mode=max")
        values["mode"] = mode
    if "compression" in attrs:
        compression = attrs["compression"].lower()
        if compression not in COMPRESSIONS:
            raise CacheError(f"unsupported compression {attrs['compression']!r} in {option}",
                             hint="use compression=gzip, zstd or uncompressed")
        values["compression"] = compression
    if "compression-level" in attrs:
        level_text = attrs["compression-level"]
        if not (level_text.isascii() and level_text.isdigit() and len(level_text) <= 2):
            raise CacheError(f"invalid compression-level {level_text!r} in {option}", hint="give a whole number")
        level = int(level_text)
        chosen: str | None = values.get("compression")
        if chosen is not None:
            low, high = LEVEL_RANGES[chosen]
            if not low <= level <= high:
                raise CacheError(f"compression-level {level} is out of range for {chosen}",
                                 hint=f"{chosen} levels go from {low} to {high}")
        values["compression_level"] = level
    if "force-compression" in attrs:
        values["force_compression"] = _bool(attrs["force-compression"], "force-compression", option)
    if "ignore-error" in attrs:
        values["ignore_error"] = _bool(attrs["ignore-error"], "ignore-error", option)
    return values


def _bool(value: str, key: str, option: str) -> bool:
    return parse_spec_bool(value, key, option, CacheError)
