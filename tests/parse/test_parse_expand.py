"""expand_word / expand_words: Docker's quote removal and substitution rules, one by one."""
from __future__ import annotations

import pytest

from builder.errors import ExpansionError, Pos
from builder.parse.expand import expand_word, expand_words

ENV = {
    "NAME": "world",
    "EMPTY": "",
    "PATHLIKE": "/usr/local/lib/archive.tar.gz",
    "SPACED": "a b  c",
    "GLOB": "aXbXc",
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # plain and braced variables, unset is empty
        ("$NAME", "world"),
        ("${NAME}", "world"),
        ("hello-$NAME!", "hello-world!"),
        ("${NAME}s", "worlds"),
        ("$NAMEs", ""),
        ("$UNSET", ""),
        ("x${UNSET}y", "xy"),
        ("$", "$"),
        ("a$", "a$"),
        ("$1", ""),
        ("$-x", "x"),
        # quotes
        ("'$NAME'", "$NAME"),
        ('"$NAME"', "world"),
        ('"it\'s $NAME"', "it's world"),
        ("'say \"hi\"'", 'say "hi"'),
        ('"a\\"b"', 'a"b'),
        ('"a\\$NAME"', "a$NAME"),
        ('"a\\\\b"', "a\\b"),
        ('"keep\\n"', "keep\\n"),
        ("'no\\escape'", "no\\escape"),
        ("a'b'c\"d\"e", "abcde"),
        ('""', ""),
        # escapes outside quotes
        ("\\$NAME", "$NAME"),
        ("a\\ b", "a b"),
        ("\\'x\\'", "'x'"),
        ("trailing\\", "trailing"),
        # unquoted whitespace is kept by expand_word
        ("a b", "a b"),
        # default / alternative
        ("${UNSET:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${NAME:-fallback}", "world"),
        ("${UNSET-fallback}", "fallback"),
        ("${EMPTY-fallback}", ""),
        ("${NAME:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${UNSET:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${UNSET:-$NAME}", "world"),
        ("${UNSET:-'$NAME'}", "$NAME"),
        ("${UNSET:-a b}", "a b"),
        ("${NAME:?message}", "world"),
        ("${EMPTY?message}", ""),
        # prefix / suffix removal with glob patterns
        ("${PATHLIKE#*/}", "usr/local/lib/archive.tar.gz"),
        ("${PATHLIKE##*/}", "archive.tar.gz"),
        ("${PATHLIKE%.*}", "/usr/local/lib/archive.tar"),
        ("${PATHLIKE%%.*}", "/usr/local/lib/archive"),
        ("${PATHLIKE#/usr}", "/local/lib/archive.tar.gz"),
        ("${PATHLIKE#nomatch}", "/usr/local/lib/archive.tar.gz"),
        ("${GLOB#a?}", "bXc"),
        ("${GLOB%X[a-c]}", "aXb"),
        ("${GLOB##*X}", "c"),
        ("${GLOB%%X*}", "a"),
        ("${GLOB#[!b]}", "XbXc"),
        ("${UNSET#x}", ""),
        # pattern replacement
        ("${GLOB/X/-}", "a-bXc"),
        ("${GLOB//X/-}", "a-b-c"),
        ("${GLOB//X}", "abc"),
    ],
)
def test_expand_word(raw, expected):
    assert expand_word(raw, ENV) == expected


def test_backtick_escape():
    assert expand_word("`$NAME", ENV, escape="`") == "$NAME"
    assert expand_word("C:\\dir\\$NAME", ENV, escape="`") == "C:\\dir\\world"
    assert expand_word('"a`"b"', ENV, escape="`") == 'a"b'


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("${UNSET:?must be set}", "UNSET: must be set"),
        ("${UNSET?}", "UNSET: is not allowed to be unset"),
        ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
        ("${EMPTY:?no empties}", "EMPTY: no empties"),
        ("'open", "matching single-quote"),
        ('"open', "matching double-quote"),
        ("${NAME", "missing '}'"),
        ("${NAME:-x", "missing '}'"),
        ("${}", "bad substitution"),
        ("${:x}", "bad substitution"),
        ("${NAME:#x}", "unsupported modifier"),
        ("${NAME^x}", "unsupported modifier"),
    ],
)
def test_expansion_errors(raw, message):
    pos = Pos("Buildfile", 3, 7)
    with pytest.raises(ExpansionError) as caught:
        expand_word(raw, ENV, pos=pos)
    assert message in caught.value.message
    assert caught.value.pos == pos


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a b   c", ["a", "b", "c"]),
        ('"a b" c', ["a b", "c"]),
        ("'a  b'c d", ["a  bc", "d"]),
        ("a\\ b c", ["a b", "c"]),
        ("$SPACED", ["a", "b", "c"]),
        ('"$SPACED"', ["a b  c"]),
        ("x$SPACED", ["xa", "b", "c"]),
        ("$UNSET", []),
        ('""', [""]),
        ("  ", []),
        ("80/tcp $UNSET 443", ["80/tcp", "443"]),
    ],
)
def test_expand_words(raw, expected):
    assert expand_words(raw, ENV) == expected
