"""Fixtures for the store/export tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder.image.store import ImageRecord, Store
from storehelpers import build_image, make_tree, opaque, whiteout


@pytest.fixture
def three_layer_image(store: Store, tmp_path: Path) -> ImageRecord:
    """base: /a, /dir/{x,y}, /gone; then /b, delete /gone, opaque /dir with /dir/z; then /a changed."""
    l1 = make_tree(tmp_path / "l1", {"a": "one\n", "dir/x": "x\n", "dir/y": "y\n", "gone": "bye\n"})
    l2 = make_tree(tmp_path / "l2", {"b": "two\n", "dir/z": "z\n"})
    whiteout(l2 / "gone")
    opaque(l2 / "dir")
    l3 = make_tree(tmp_path / "l3", {"a": "three\n"})
    return build_image(store, [l1, l2, l3], "app:1")
