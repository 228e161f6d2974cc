"""Every bad Buildfile raises ParseError at the expected line:column with the expected message."""
from __future__ import annotations

import pytest

from builder.errors import ParseError
from builder.parse import parse_buildfile

from ._data import BAD_FILES, read


def test_there_is_enough_bad_testdata():
    assert len(BAD_FILES) >= 25
    for path in BAD_FILES:
        assert path.with_suffix(".error").is_file(), f"{path.name} has no .error file"


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.stem)
def test_bad_file(path):
    expected = path.with_suffix(".error").read_text(encoding="utf-8").strip()
    line, column, message = expected.split(":", 2)
    text = read(path)
    with pytest.raises(ParseError) as caught:
        parse_buildfile(text, path.name)
    error = caught.value
    assert (error.pos.file, error.pos.line, error.pos.column) == (path.name, int(line), int(column))
    assert message.strip() in error.message
    # The error carries the offending line and a one-line hint, and renders with a caret.
    physical = text.lstrip("\ufeff").split("\n")
    assert error.source_line == physical[error.pos.line - 1].rstrip("\r")
    assert error.hint and "\n" not in error.hint
    rendered = error.render().splitlines()
    assert rendered[0] == f"{path.name}:{line}:{column}: {error.message}"
    assert rendered[2].index("^") - rendered[2].index("|") - 2 == int(column) - 1
