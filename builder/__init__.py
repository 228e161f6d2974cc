"""A daemonless, reproducible Dockerfile-style container image builder."""
from __future__ import annotations

__version__ = "0.1.0"


def build(*args, **kwargs):
    """Build an image; see `builder.api.build` for the arguments."""
    from builder.api import build as _build

    return _build(*args, **kwargs)
