"""The builder.layer functions the store, exporters and importers use, in one place.

Imported lazily (inside functions) so the store works for blob/tag operations without them.
"""
from __future__ import annotations

from typing import Any, BinaryIO


def open_layer_stream(fileobj: BinaryIO) -> BinaryIO:
    try:
        from builder.layer import open_layer_stream as impl
    except ImportError:
        from builder.layer.decompress import open_layer_stream as impl
    return impl(fileobj)


def write_layer(*args: Any, **kwargs: Any):
    from builder.layer import write_layer as impl

    return impl(*args, **kwargs)


def unpack_layer(*args: Any, **kwargs: Any):
    from builder.layer import unpack_layer as impl

    return impl(*args, **kwargs)


def apply_layer(*args: Any, **kwargs: Any):
    from builder.layer import apply_layer as impl

    return impl(*args, **kwargs)
