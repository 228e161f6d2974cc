"""builder.parse.wildcard, and `${V#p}` & co. on top of it (issue 10, item 9).

The shell-pattern operators used to compile the pattern to a Python `re` and try it on every
prefix or suffix; that code is kept below as the oracle of a differential test on small inputs.
"""
from __future__ import annotations

import os
import re
import warnings

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from builder.errors import ExpansionError
from builder.parse.expand import _replace, _trim_prefix, _trim_suffix, expand_word
from builder.parse.wildcard import ANY, NOT_SLASH, Char, CharTest, Matcher, Optional, Seq, Star, parse_regex_subset

SETTINGS = settings(max_examples=int(os.environ.get("WILDCARD_DIFF_EXAMPLES", "400")), deadline=None)


def _literal(text: str) -> list:
    return [Char(CharTest.literal(char)) for char in text]


def test_matcher_basics():
    star_dot_o = Matcher(Seq((Star(Char(NOT_SLASH)), *_literal(".o"))))
    assert star_dot_o.fullmatch("a.o")
    assert star_dot_o.fullmatch(".o")
    assert not star_dot_o.fullmatch("a/b.o")
    optional_dirs = Matcher(Seq((*_literal("a/"), Optional(Seq((Star(Char(ANY)), *_literal("/")))), *_literal("b"))))
    assert optional_dirs.fullmatch("a/b")
    assert optional_dirs.fullmatch("a/x/y/b")
    assert not optional_dirs.fullmatch("a/xb")


def test_prefix_queries():
    a_star_b = Matcher(Seq((*_literal("a"), Star(Char(ANY)), *_literal("b"))))
    assert a_star_b.prefix_ends("abxbyb", shortest=True) == 2
    assert a_star_b.prefix_ends("abxbyb", shortest=False) == 6
    assert a_star_b.prefix_ends("xab", shortest=True) == -1
    assert a_star_b.prefix_ends("xab", 1, shortest=True) == 3
    assert a_star_b.prefix_matches("abab") == [False, False, True, False, True]
    parent = Matcher(parse_regex_subset("^a/[^/]*$"))
    assert parent.matches_path_or_parent("a/b/c/d")
    assert not parent.matches_path_or_parent("b/a/c")


def test_cache_budget_restarts_without_changing_answers(monkeypatch):
    from builder.parse import wildcard

    monkeypatch.setattr(wildcard, "_MAX_DFA_STATES", 3)
    matcher = Matcher(parse_regex_subset("^(.*/)?a/(.*/)?b/(.*/)?c$"))
    for _ in range(3):
        assert matcher.fullmatch("x/a/y/b/z/c")
        assert not matcher.fullmatch("x/a/y/b/z/d")
        assert matcher.matches_path_or_parent("a/b/c/d/e")


@pytest.mark.parametrize(
    "regex, problem",
    [("a|b", "unsupported"), ("a{2}", "unsupported"), ("*a", "nothing to repeat"), ("a**", "multiple repeat"),
     ("[z-a]", "bad character range"), ("[ab", "unterminated"), ("(a", "missing )"), ("a)", "unbalanced"),
     ("\\d", "unsupported escape"), ("a$b", "only supported at the end")],
)
def test_regex_subset_refuses_what_it_does_not_read(regex, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_regex_subset(regex)


# ---- the shell patterns of ${V#p}, ${V%p}, ${V/p/r}: the old implementation as the oracle ----


def _old_glob_to_regex(pattern: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            index += 1
            out.append(re.escape(pattern[index]))
        elif char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = pattern.find("]", index + 2 if pattern[index + 1 : index + 2] in ("!", "^") else index + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[index + 1 : end]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("^", "\\^")
                out.append(f"[{'^' if negate else ''}{body}]")
                index = end
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


def _old_compile(pattern: str) -> re.Pattern[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return re.compile(_old_glob_to_regex(pattern), re.DOTALL)


def _old_trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    matcher = _old_compile(pattern)
    lengths = range(len(value), -1, -1) if greedy else range(len(value) + 1)
    for length in lengths:
        if matcher.fullmatch(value[:length]):
            return value[length:]
    return value


def _old_trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    matcher = _old_compile(pattern)
    starts = range(len(value) + 1) if greedy else range(len(value), -1, -1)
    for start in starts:
        if matcher.fullmatch(value[start:]):
            return value[:start]
    return value


def _old_replace(pattern: str, replacement: str, value: str, replace_all: bool) -> str:
    if not pattern:
        return value
    return _old_compile(pattern).sub(lambda _m: replacement, value, count=0 if replace_all else 1)


SHELL_PIECES = ["a", "b", "c", "*", "?", "[ab]", "[!a]", "[^b]", "[a-c]", "[a-]", "[-b]", "\\*", "\\a", "\\", "[", "]", "**", "\n", "[\\]"]
patterns = st.lists(st.sampled_from(SHELL_PIECES), max_size=6).map("".join)
values = st.text(alphabet="abc*?[]\\\n", max_size=10)


def _comparable(pattern: str) -> bool:
    """Outside `[]` / `[!]` / `[^]` (a `]` first in a class: a member now, as in POSIX shells;
    the old code opened an empty class that swallowed the rest of the pattern, or failed)."""
    try:
        _old_compile(pattern)
    except re.error:
        return False
    return not re.search(r"\[[!^]?\]", pattern)


@SETTINGS
@given(patterns, values, st.booleans())
def test_trim_same_answers(pattern, value, greedy):
    assume(_comparable(pattern))
    assert _trim_prefix(pattern, value, greedy) == _old_trim_prefix(pattern, value, greedy)
    assert _trim_suffix(pattern, value, greedy) == _old_trim_suffix(pattern, value, greedy)


@SETTINGS
@given(patterns, values, st.booleans())
def test_replace_same_answers(pattern, value, replace_all):
    assume(_comparable(pattern))
    assert _replace(pattern, "R", value, replace_all) == _old_replace(pattern, "R", value, replace_all)


def test_bracket_first_is_a_member_and_bad_ranges_are_errors():
    assert expand_word("${V#[]a]}", {"V": "]x"}) == "x"
    assert expand_word("${V#[!]]}", {"V": "ax"}) == "x"
    with pytest.raises(ExpansionError, match="bad character range") as caught:
        expand_word("${V#[z-a]}", {"V": "abc"})
    assert caught.value.pos is None or caught.value.pos.line >= 1


def test_pattern_length_limit():
    from builder.context.dockerignore import IgnoreMatcher
    from builder.context.tree import _go_match_pattern
    from builder.errors import ContextError
    from builder.parse.wildcard import MAX_PATTERN_LENGTH

    longest = "a*" * (MAX_PATTERN_LENGTH // 2)
    assert expand_word("${V#" + longest + "}", {"V": "ab"}) == "ab"
    with pytest.raises(ExpansionError, match="pattern longer than 65536 characters") as caught:
        expand_word("${V#" + longest + "a}", {"V": "ab"})
    assert len(caught.value.render()) < 500  # the pattern is not echoed whole
    with pytest.raises(ContextError, match="pattern longer than"):
        _go_match_pattern(longest + "a")
    with pytest.raises(ContextError, match="pattern longer than"):
        IgnoreMatcher.from_lines([longest + "a"])
    IgnoreMatcher.from_lines([longest])
