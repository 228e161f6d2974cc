"""OCI distribution client: pull images into the store, push them out (see client.py).

    pull(store, ref, platform=None, insecure=())        -> ImageRecord (stored and tagged)
    push(store, local_ref, remote_ref=None, insecure=(), chunk_size=0) -> manifest digest
"""
from __future__ import annotations

import builder.fetchers  # noqa: F401 - lazy layers from a registry cache are fetched through this package

from .client import RegistryClient
from .pulling import pull_image as pull
from .pushing import push_image as push

__all__ = ["RegistryClient", "pull", "push"]
