"""OCI distribution client: pull images into the store, push them out (see client.py).

    pull(store, ref, platform=None, insecure=())        -> ImageRecord (stored and tagged)
    push(store, local_ref, remote_ref=None, insecure=(), chunk_size=0) -> manifest digest
"""
from __future__ import annotations

from builder.image.lazy import register_fetcher

from .client import RegistryClient
from .pulling import fetch_lazy_blob
from .pulling import pull_image as pull
from .pushing import push_image as push

# Lazy layers from a registry cache (--cache-from) are fetched through this package.
register_fetcher("registry", fetch_lazy_blob)

__all__ = ["RegistryClient", "pull", "push"]
