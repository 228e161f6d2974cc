"""Property: whatever the text, the parser returns a Buildfile or raises a BuildError."""
from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import BuildError
from builder.parse import ast, parse_buildfile
from builder.parse.dump import ast_to_data

from ._data import OK_FILES, read

SEEDS = [read(path) for path in OK_FILES]
PIECES = [
    "FROM ", "RUN ", "COPY ", "ADD ", "ENV ", "ARG ", "LABEL ", "ONBUILD ", "HEALTHCHECK ", "SHELL ",
    "CMD ", "EXPOSE ", "VOLUME ", "USER ", "WORKDIR ", "STOPSIGNAL ", "MAINTAINER ", "ENTRYPOINT ",
    "NONE", "AS ", "--mount=", "--from=", "--link", "--interval=", "type=cache,", "<<EOF", "<<-'X'",
    "EOF", "X", "\\\n", "`\n", "\n", "\r\n", "\t", " ", "#", "# escape=`\n", "# syntax=a\n",
    '["a", "b"]', "[", "]", '"', "'", "=", "$", "${A:-b}", "\ufeff", "\x00", "é",
]
# PARSE_FUZZ_EXAMPLES raises the count for a longer hunt; the default keeps the suite fast.
SETTINGS = settings(max_examples=int(os.environ.get("PARSE_FUZZ_EXAMPLES", "250")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(text: str) -> None:
    try:
        result = parse_buildfile(text, "fuzz.Buildfile")
    except BuildError as error:
        assert error.pos is not None
        error.render()
        return
    assert isinstance(result, ast.Buildfile)
    json.dumps(ast_to_data(result))


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text(text):
    _check(text)


@SETTINGS
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=6), max_size=40).map("".join))
def test_buildfile_like_text(text):
    _check(text)


@st.composite
def mutated_testdata(draw):
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "swap_lines", "truncate"]))
        at = draw(st.integers(0, len(text)))
        if kind == "insert":
            text = text[:at] + draw(st.sampled_from(PIECES) | st.text(max_size=3)) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)) :]
        elif kind == "replace":
            text = text[:at] + draw(st.text(min_size=1, max_size=2)) + text[at + 1 :]
        elif kind == "swap_lines":
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        else:
            text = text[:at]
    return text


@SETTINGS
@given(mutated_testdata())
def test_mutated_testdata(text):
    _check(text)
