"""Differential test against dockerfile-parse: same instructions, same joined values.

For every ok Buildfile, our (keyword, value after continuation joining) list must equal
dockerfile-parse's `structure` (instruction, value), comments left out. The files where the
two differ for a known reason are listed in KNOWN_DIFFERENCES, the one place for them; for
those the test checks that they still differ, so the list cannot go stale.
"""
from __future__ import annotations

import fnmatch
import io

import pytest
from dockerfile_parse import DockerfileParser

from builder.parse import parse_buildfile
from builder.parse.lines import prepare

from ._data import OK_FILES, read

KNOWN_DIFFERENCES = {
    "bom": "dockerfile-parse keeps a UTF-8 byte-order mark, so it reads the first line as an "
    "instruction named '\\ufeff#'; Docker strips the BOM (and so do we)",
    "continuation_at_eof": "dockerfile-parse drops an instruction whose last line ends in a "
    "continuation at end of file; Docker (and we) keep it",
    "continuation_comments": "dockerfile-parse ends a continuation at an empty line (the old "
    "Docker behaviour); BuildKit skips empty lines inside a continuation, with a warning",
    "continuation_double_backslash": "dockerfile-parse continues a line that ends in two escape "
    "characters; BuildKit (and we) read them as an escaped escape that ends the instruction",
    "heredoc_*": "dockerfile-parse does not know heredocs and reads their bodies as instructions",
}


def _known_reason(stem: str) -> str | None:
    for pattern, reason in KNOWN_DIFFERENCES.items():
        if fnmatch.fnmatchcase(stem, pattern):
            return reason
    return None


def ours(text: str, name: str) -> list[tuple[str, str]]:
    buildfile = parse_buildfile(text, name)
    lines = prepare(text, name).lines
    assert len(lines) == len(buildfile.instructions)
    pairs = []
    for instruction, line in zip(buildfile.instructions, lines, strict=True):
        parts = line.text.strip().split(None, 1)
        pairs.append((instruction.keyword, parts[1].strip() if len(parts) > 1 else ""))
    return pairs


def theirs(raw: bytes) -> list[tuple[str, str]]:
    parser = DockerfileParser(fileobj=io.BytesIO(raw))
    return [(item["instruction"], item["value"]) for item in parser.structure if item["instruction"] != "COMMENT"]


@pytest.mark.parametrize("path", OK_FILES, ids=lambda p: p.stem)
def test_same_structure_as_dockerfile_parse(path):
    mine = ours(read(path), path.name)
    other = theirs(path.read_bytes())
    reason = _known_reason(path.stem)
    if reason is None:
        assert mine == other
    else:
        assert mine != other, f"listed as a known difference ({reason}) but no longer differs"


def test_known_differences_name_real_files():
    stems = {path.stem for path in OK_FILES}
    for pattern in KNOWN_DIFFERENCES:
        assert fnmatch.filter(stems, pattern), f"{pattern} matches no testdata file"


def test_most_files_are_compared():
    compared = [path for path in OK_FILES if _known_reason(path.stem) is None]
    assert len(compared) >= 50
