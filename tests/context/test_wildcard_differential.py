"""The linear matchers answer as the regular expressions they replaced did (issue 10, item 9).

`.dockerignore` keeps patternmatcher's translation to a regular expression; only the engine
reading it changed (from Python's backtracking `re` to `builder.parse.wildcard`), so the old
engine is the oracle here, on small random patterns and paths where it is fast. COPY source
wildcards were translated by a function now gone; it is kept below as the oracle.
"""
from __future__ import annotations

import os
import posixpath
import re
import warnings

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from builder.context.dockerignore import (
    IgnoreMatcher,
    _check_go_pattern_syntax,
    clean_ignore_lines,
    go_clean,
    translate,
)
from builder.context.tree import _go_match_pattern
from builder.errors import ContextError
from builder.parse.wildcard import Matcher, parse_regex_subset

# WILDCARD_DIFF_EXAMPLES raises the count for a longer hunt; the default keeps the suite fast.
SETTINGS = settings(max_examples=int(os.environ.get("WILDCARD_DIFF_EXAMPLES", "400")), deadline=None)

IGNORE_PIECES = [
    "a", "b", "/", "*", "**", "?", "[ab]", "[^a]", "[a-b]", "[a-]", "\\*", "\\a", "\\[", ".", "[", "]",
    "^", "-", "(", ")", "$", "+", "|", "{", "[*]", "[?]", "[a*]", "**/", "\\", "[.]", "[[]", "[\\]]",
]
PATH_CHARS = "ab/.*?[]-^()$"  # no newline: Python's `$` also matched before a final one, Go's does not


def _old_regex(regex: str) -> re.Pattern[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "possible nested set" and friends
        return re.compile(regex + "$", re.DOTALL)


ignore_patterns = st.lists(st.sampled_from(IGNORE_PIECES), min_size=1, max_size=6).map("".join)
paths = st.text(alphabet=PATH_CHARS, max_size=10)


@SETTINGS
@given(ignore_patterns, paths)
def test_dockerignore_regex_same_answers(pattern, path):
    cleaned = clean_ignore_lines([pattern])
    assume(cleaned and not cleaned[0].startswith("!"))
    text = cleaned[0]
    try:
        _check_go_pattern_syntax(text)
    except ValueError:
        assume(False)
    kind, regex = translate(text)
    assume(kind == "regexp")
    try:
        old = _old_regex(regex)
    except re.error:
        with pytest.raises(ValueError):
            parse_regex_subset(regex + "$")
        return
    new = Matcher(parse_regex_subset(regex + "$"))
    assert new.fullmatch(path) == (old.match(path) is not None)


def _old_ignored(patterns: list[str], relpath: str) -> bool:
    """IgnoreMatcher.ignored as it was: every pattern tried on the path and on each parent."""
    compiled = []
    for pattern in patterns:
        exclusion = pattern.startswith("!")
        text = pattern[1:] if exclusion else pattern
        kind, regex = translate(text)
        compiled.append((text, exclusion, kind, _old_regex(regex) if kind == "regexp" else None))

    def match(text: str, kind: str, regex, path: str) -> bool:
        if kind == "exact":
            return path == text
        if kind == "prefix":
            return path.startswith(text[:-2])
        if kind == "suffix":
            return path.endswith(text[2:]) or (text[2:].startswith("/") and path == text[3:])
        return regex.match(path) is not None

    path = go_clean(relpath.lstrip("/"))
    if path == ".":
        return False
    parent = posixpath.dirname(path)
    parent_dirs = parent.split("/") if parent else []
    matched = False
    for text, exclusion, kind, regex in compiled:
        if exclusion != matched:
            continue
        hit = match(text, kind, regex, path) or any(
            match(text, kind, regex, "/".join(parent_dirs[: i + 1])) for i in range(len(parent_dirs))
        )
        if hit:
            matched = not exclusion
    return matched


@SETTINGS
@given(st.lists(st.tuples(st.booleans(), ignore_patterns), min_size=1, max_size=4), paths)
def test_dockerignore_ignored_same_answers(lines, path):
    raw = [("!" if negate else "") + pattern for negate, pattern in lines]
    try:
        matcher = IgnoreMatcher.from_lines(raw)
    except ContextError:
        assume(False)
    assert matcher.ignored(path) == _old_ignored(list(matcher.patterns), path)


def test_dockerignore_quirks_kept():
    """patternmatcher's own quirks, which RE2 shares: a class swallows a `*`'s translation."""
    matcher = IgnoreMatcher.from_lines(["x[a*]y"])  # `x[a[^/]*]y`: a class of a [ ^ /, starred
    assert matcher.ignored("xaa]y")
    assert not matcher.ignored("x*y")
    assert IgnoreMatcher.from_lines(["a^b*"]).ignored("a^bc") is False  # `^` anchors, mid-pattern too
    assert IgnoreMatcher.from_lines(["a^b"]).ignored("a^b") is True  # ...but only in a regexp


def _old_go_match_regex(pattern: str) -> re.Pattern[str]:
    """COPY's component matcher before issue 10 (the oracle)."""
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i < n:
            out.append(re.escape(pattern[i]))
            i += 1
        elif ch == "[":
            end = i
            if end < n and pattern[end] == "^":
                end += 1
            body_start = end
            while end < n and (pattern[end] != "]" or end == body_start):
                if pattern[end] == "\\":
                    end += 1
                end += 1
            if end >= n:
                raise ContextError(f"syntax error in pattern {pattern!r}: unclosed '['")
            body = pattern[i:end]
            negate = body.startswith("^")
            if negate:
                body = body[1:]
            body = body.replace("[", "\\[")
            out.append("[" + ("^" if negate else "") + body + "]")
            i = end + 1
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


COPY_PIECES = ["a", "b", "*", "?", "\\*", "\\a", "[ab]", "[^a]", "[a-b]", "[]a]", "[-a]", "[a-]", "-", "]", "[", "^", ".", "[^]b]"]


@SETTINGS
@given(st.lists(st.sampled_from(COPY_PIECES), min_size=1, max_size=6).map("".join), st.text(alphabet="ab-]^[*.\\", max_size=8))
def test_copy_wildcard_same_answers(pattern, name):
    # Inside a class a backslash now escapes as in Go's filepath.Match (`[\d]` is `d`); the old
    # code handed it to Python's `re` (`[\d]` was any digit). Compared where both agree to mean.
    assume(not re.search(r"\[[^\]]*\\", pattern))
    try:
        old = _old_go_match_regex(pattern)
    except (ContextError, re.error):
        with pytest.raises(ContextError):
            _go_match_pattern(pattern)
        return
    assert _go_match_pattern(pattern).fullmatch(name) == (old.match(name) is not None)


def test_copy_wildcard_class_escape_is_go_literal():
    assert _go_match_pattern("[\\d]").fullmatch("d")
    assert not _go_match_pattern("[\\d]").fullmatch("1")
    with pytest.raises(ContextError, match="bad range"):
        _go_match_pattern("[z-a]")
