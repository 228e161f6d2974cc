"""OCI distribution client: pull images into the store, push them out (see client.py)."""
from __future__ import annotations

from .client import RegistryClient, pull, push

__all__ = ["RegistryClient", "pull", "push"]
