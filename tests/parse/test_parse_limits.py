"""Size limits of a Buildfile (issue 10, item 11): where exactly they bite, and the grammar change
that keeps lexing a long word linear in memory."""
from __future__ import annotations

import re

import pytest

from builder.api import decode_buildfile
from builder.errors import ParseError
from builder.parse import parse_buildfile
from builder.parse.grammar import possessive
from builder.parse.lines import MAX_BUILDFILE_BYTES, MAX_LINE_BYTES


def test_a_line_of_exactly_the_limit_is_accepted():
    text = "FROM scratch\nLABEL a=" + "b" * (MAX_LINE_BYTES - len("LABEL a=")) + "\n"
    assert parse_buildfile(text).instructions[1].pairs[0][1].startswith("bbb")


def test_one_byte_more_is_refused_at_that_column():
    text = "FROM scratch\nLABEL a=" + "b" * (MAX_LINE_BYTES - len("LABEL a=") + 1) + "\n"
    with pytest.raises(ParseError, match="longer than 65535 bytes") as caught:
        parse_buildfile(text)
    assert (caught.value.pos.line, caught.value.pos.column) == (2, MAX_LINE_BYTES + 1)
    assert caught.value.source_line is None  # the line is not echoed


def test_the_line_limit_counts_utf8_bytes():
    euro = "\u20ac"  # three bytes
    fits = "# " + euro * ((MAX_LINE_BYTES - 2) // 3)
    parse_buildfile(fits + "\nFROM scratch\n")
    with pytest.raises(ParseError) as caught:
        parse_buildfile(fits + euro + "\nFROM scratch\n")
    assert caught.value.pos.column == len(fits) + 1


def test_heredoc_body_lines_are_limited_too():
    text = "FROM scratch\nRUN <<EOF\n" + "x" * (MAX_LINE_BYTES + 1) + "\nEOF\n"
    with pytest.raises(ParseError, match="line 3 is longer"):
        parse_buildfile(text)


def test_the_whole_file_limit():
    comment = "#" + "c" * 999 + "\n"  # 1000 bytes; comments cost the parser nothing
    head = "FROM scratch\n"
    count = (MAX_BUILDFILE_BYTES - len(head)) // len(comment)
    padding = "#" * (MAX_BUILDFILE_BYTES - len(head) - count * len(comment) - 1) + "\n"
    at_limit = head + comment * count + padding
    assert len(at_limit.encode()) == MAX_BUILDFILE_BYTES
    parse_buildfile(at_limit)
    with pytest.raises(ParseError, match="larger than 1048576 bytes") as caught:
        parse_buildfile(at_limit + "#\n")
    assert caught.value.pos.line == count + 3


def test_reading_stops_at_the_limit_and_reports_a_long_line_first():
    with pytest.raises(ParseError, match="line 2 is longer"):
        decode_buildfile(b"FROM scratch\nLABEL a=" + b"b" * (MAX_BUILDFILE_BYTES + 1), "Buildfile")
    with pytest.raises(ParseError, match="larger than"):
        decode_buildfile(b"#\n" * (MAX_BUILDFILE_BYTES // 2 + 1), "Buildfile")


@pytest.mark.parametrize(
    "regex, expected",
    [
        ("(?:a|b)*", "(?:a|b)*+"),
        ("(?:a)+x", "(?:a)++x"),
        ("[)*](?:b)*", "[)*](?:b)*+"),  # a `)*` inside a class is not a repetition
        ("[]a)*](?:b)+", "[]a)*](?:b)++"),  # `]` first in a class is a member
        ("\\)*", "\\)*"),  # an escaped parenthesis
        ("(?:a)*?", "(?:a)*?"),  # lazy stays lazy
        ("(?:a)++", "(?:a)++"),
        ("(?:a){2}", "(?:a){2}"),
    ],
)
def test_possessive_rewrite(regex, expected):
    assert possessive(regex) == expected
    re.compile(possessive(regex))
