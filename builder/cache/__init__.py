"""A build cache shared through a registry or a directory: `--cache-to` / `--cache-from`.

    spec.py      parse_cache_to / parse_cache_from -> CacheSpec
    record.py    the cache record (an OCI artifact) and its inline form
    importer.py  CacheImporter: step keys looked up in the records of the --cache-from sources
    exporter.py  export_cache (registry, local) and inline_annotation
    layout.py    an OCI layout dir read and written without following links

docs/CACHE.md describes the format, the lookups, laziness and the robustness rules.
"""
from __future__ import annotations

from builder.image.lazy import register_fetcher

from .exporter import LoggedStep, export_cache, inline_annotation, select_steps
from .importer import CacheHit, CacheImporter
from .spec import CacheSpec, parse_cache_from, parse_cache_to

__all__ = ["CacheHit", "CacheImporter", "CacheSpec", "LoggedStep", "export_cache", "inline_annotation",
           "parse_cache_from", "parse_cache_to", "select_steps"]


def _fetch_from_registry(store, origin: dict, digest: str, size: int) -> None:  # noqa: ANN001
    from builder.registry.pulling import fetch_lazy_blob

    fetch_lazy_blob(store, origin, digest, size)


# A build fetches layers it took from a registry cache (builder.image.lazy) through the registry
# client, imported only then: a build that needs none does not pay for it.
register_fetcher("registry", _fetch_from_registry)
