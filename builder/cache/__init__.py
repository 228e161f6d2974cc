"""A build cache shared through a registry or a directory: `--cache-to` / `--cache-from`.

    spec.py      parse_cache_to / parse_cache_from -> CacheSpec
    record.py    the cache record (an OCI artifact) and its inline form
    importer.py  CacheImporter: step keys looked up in the records of the --cache-from sources
    exporter.py  export_cache (registry, local) and inline_annotation
    layout.py    an OCI layout dir read and written without following links

docs/CACHE.md describes the format, the lookups, laziness and the robustness rules.

The names below load their module on first use: a build without --cache-to/--cache-from never
imports the exporter, the importer or the registry client they use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import builder.fetchers  # noqa: F401 - lazy layers from a registry cache can be fetched

if TYPE_CHECKING:
    from .exporter import export_cache, inline_annotation
    from .importer import CacheHit, CacheImporter
    from .spec import CacheSpec, parse_cache_from, parse_cache_to
    from .steplog import LoggedStep, select_steps

_LAZY = {
    "LoggedStep": "steplog", "select_steps": "steplog", "export_cache": "exporter", "inline_annotation": "exporter",
    "CacheHit": "importer", "CacheImporter": "importer",
    "CacheSpec": "spec", "parse_cache_from": "spec", "parse_cache_to": "spec",
}

__all__ = ["CacheHit", "CacheImporter", "CacheSpec", "LoggedStep", "export_cache", "inline_annotation",
           "parse_cache_from", "parse_cache_to", "select_steps"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'builder.cache' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"builder.cache.{module}"), name)
    globals()[name] = value
    return value
