"""Fixtures for the context/COPY tests."""
from __future__ import annotations

from pathlib import Path

import pytest
from ctxhelpers import make_tree  # type: ignore[import-not-found]


@pytest.fixture
def tree():
    return make_tree


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path
