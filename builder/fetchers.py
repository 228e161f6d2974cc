"""Where lazy layers (builder.image.lazy) are fetched from, registered without loading the client.

A store may hold layers a build took from a registry cache in an earlier process; any later
command that reads their bytes must be able to fetch them. Registering costs nothing: the
registry client (urllib, ssl, json parsing of manifests) is imported only when a blob is fetched.
"""
from __future__ import annotations

from typing import Any

from builder.image.lazy import register_fetcher


def _fetch_from_registry(store: Any, origin: dict[str, Any], digest: str, size: int) -> None:
    from builder.registry.pulling import fetch_lazy_blob

    fetch_lazy_blob(store, origin, digest, size)


register_fetcher("registry", _fetch_from_registry)
