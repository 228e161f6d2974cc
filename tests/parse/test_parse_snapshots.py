"""Every ok Buildfile parses, and its AST matches the reviewed snapshot."""
from __future__ import annotations

import json

import pytest

from builder.parse import parse_buildfile
from builder.parse.dump import ast_to_data

from ._data import OK_FILES, read


def test_there_is_enough_testdata():
    assert len(OK_FILES) >= 60


@pytest.mark.parametrize("path", OK_FILES, ids=lambda p: p.stem)
def test_ast_snapshot(path, snapshot):
    data = ast_to_data(parse_buildfile(read(path), path.name))
    json.dumps(data)  # the dump must be JSON-able as it is
    assert data == snapshot
