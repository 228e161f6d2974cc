"""Wildcard patterns matched in time linear in the text, whatever the pattern.

User-written patterns (`.dockerignore` lines, COPY source wildcards, the shell patterns of
`${V#p}`, `${V%p}`, `${V/p/r}`) used to become Python `re` expressions. `re` backtracks, so
`a/**/**/**/**/b` or `*a*a*a*a*b` took minutes on a long name; Go's matchers, which Docker
uses, are RE2 and never do. Here a pattern is a small NFA (Thompson's construction) and a match
walks the text once, carrying the *set* of live NFA states: O(len(text) * len(pattern)) at
worst. The sets met are cached as DFA states (RE2's lazy DFA), so once warm a character costs
one dict lookup. The cache has a budget; past it the cache starts again, never the work.

A pattern is built from a small tree (`Char`, `Seq`, `Star`, `Optional`, `AtStart`), either by
the caller or by `parse_regex_subset`, which reads the few regular-expression constructs the
`.dockerignore` translation emits, with Python's own rules for them (so `.dockerignore` keeps
its exact behaviour, quirks included).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Union

# The longest pattern compiled. Matching costs O(len(text) * len(pattern)) at worst, and the NFA
# a few dozen bytes per pattern character; real patterns are a few dozen characters, and a
# Buildfile line holds at most 64 KiB anyway.
MAX_PATTERN_LENGTH = 1 << 16


def check_pattern_length(pattern: str) -> None:
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"pattern longer than {MAX_PATTERN_LENGTH} characters")


@dataclass(frozen=True)
class CharTest:
    """Which single characters a position accepts: listed ones and ranges, maybe negated."""

    chars: frozenset[str] = frozenset()
    ranges: tuple[tuple[str, str], ...] = ()
    negate: bool = False

    def __call__(self, char: str) -> bool:
        hit = char in self.chars or any(low <= char <= high for low, high in self.ranges)
        return hit != self.negate

    @staticmethod
    def literal(char: str) -> "CharTest":
        return _literal_test(char)


@lru_cache(maxsize=4096)
def _literal_test(char: str) -> CharTest:
    """Shared per character: a long literal pattern holds one reference per position, not a set."""
    return CharTest(frozenset(char))


@lru_cache(maxsize=4096)
def shared_test(chars: frozenset[str], ranges: tuple[tuple[str, str], ...], negate: bool) -> CharTest:
    """One object per distinct class (`[^/]` appears in most `.dockerignore` lines)."""
    return CharTest(chars, ranges, negate)


ANY = CharTest(negate=True)
NOT_SLASH = CharTest(frozenset("/"), negate=True)


@dataclass(frozen=True)
class Char:
    """Exactly one character that passes `test`."""

    test: CharTest


@dataclass(frozen=True)
class Seq:
    """`items`, each matched right after the one before."""

    items: tuple["Node", ...]


@dataclass(frozen=True)
class Star:
    """Zero or more of `item`."""

    item: "Node"


@dataclass(frozen=True)
class Optional:
    """Zero or one of `item`."""

    item: "Node"


@dataclass(frozen=True)
class AtStart:
    """Matches the empty string at position 0 of the text only (`^`)."""


Node = Union[Char, Seq, Star, Optional, AtStart]


def reverse(node: Node) -> Node:
    """The pattern that matches the reversed strings (for suffix searches)."""
    if isinstance(node, Seq):
        return Seq(tuple(reverse(item) for item in reversed(node.items)))
    if isinstance(node, Star):
        return Star(reverse(node.item))
    if isinstance(node, Optional):
        return Optional(reverse(node.item))
    if isinstance(node, AtStart):
        raise ValueError("a pattern anchored inside cannot be reversed")
    return node


# ---- the NFA ---------------------------------------------------------------------------------

_MATCH, _CHAR, _SPLIT, _AT_START = range(4)

# Budget of one pattern's DFA cache: states kept and NFA state ids held in them, transitions.
_MAX_DFA_STATES = 2_000
_MAX_DFA_ELEMENTS = 200_000
_MAX_DFA_TRANSITIONS = 100_000


@dataclass(slots=True)
class _DfaCache:
    """The states of the matcher's DFA built so far, with its size counted against the limits."""

    sets: list[frozenset[int]] = field(default_factory=list)
    index: dict[frozenset[int], int] = field(default_factory=dict)
    transitions: list[dict[str, int]] = field(default_factory=list)
    accepting: list[bool] = field(default_factory=list)
    elements: int = 0
    transition_count: int = 0

    def over_budget(self) -> bool:
        return (
            len(self.sets) > _MAX_DFA_STATES
            or self.elements > _MAX_DFA_ELEMENTS
            or self.transition_count > _MAX_DFA_TRANSITIONS
        )


_DEAD = 0  # the empty set of NFA states: nothing can match any more
_START = 1
# Cache misses of every matcher are computed under one lock: they are rare once warm, and a
# lock per matcher would cost memory for each of thousands of `.dockerignore` lines.
_LOCK = threading.Lock()


class Matcher:
    """A compiled pattern. Thread-safe: cache misses are computed under a lock."""

    __slots__ = ("_states", "_start", "_cache")

    def __init__(self, pattern: Node) -> None:
        # Each NFA state: (kind, a, b): _CHAR (test, next), _SPLIT (next1, next2),
        # _AT_START (next, -), _MATCH.
        self._states: list[tuple] = [(_MATCH, None, None)]
        self._start = self._emit(pattern, 0)
        self._cache: _DfaCache | None = None  # built on the first query

    # construction ------------------------------------------------------------------------

    def _emit(self, node: Node, following: int) -> int:
        """Add the states of `node`, continuing to state `following`; return its entry state.

        Built back to front, so a node's continuation always exists before the node.
        """
        states = self._states
        if isinstance(node, Char):
            states.append((_CHAR, node.test, following))
            return len(states) - 1
        if isinstance(node, Seq):
            for item in reversed(node.items):
                following = self._emit(item, following)
            return following
        if isinstance(node, Star):
            loop = len(states)
            states.append((_SPLIT, None, None))  # placeholder until the body exists
            body = self._emit(node.item, loop)
            states[loop] = (_SPLIT, body, following)
            return loop
        if isinstance(node, Optional):
            body = self._emit(node.item, following)
            states.append((_SPLIT, body, following))
            return len(states) - 1
        if isinstance(node, AtStart):
            states.append((_AT_START, following, None))
            return len(states) - 1
        raise TypeError(f"not a pattern node: {node!r}")

    def _closure(self, entries, at_start: bool) -> frozenset[int]:
        """The character-consuming and final states reachable from `entries` without input."""
        states = self._states
        seen: set[int] = set()
        result: set[int] = set()
        stack = list(entries)
        while stack:
            index = stack.pop()
            if index in seen:
                continue
            seen.add(index)
            kind, first, second = states[index]
            if kind == _SPLIT:
                stack.append(first)
                stack.append(second)
            elif kind == _AT_START:
                if at_start:
                    stack.append(first)
            else:
                result.add(index)
        return frozenset(result)

    def _new_cache(self) -> _DfaCache:
        cache = _DfaCache()
        self._intern(cache, frozenset())
        self._intern(cache, self._closure([self._start], at_start=True))
        return cache

    @staticmethod
    def _intern(cache: _DfaCache, states: frozenset[int]) -> int:
        found = cache.index.get(states)
        if found is not None:
            return found
        cache.sets.append(states)
        cache.transitions.append({})
        cache.accepting.append(0 in states)
        cache.elements += len(states)
        index = len(cache.sets) - 1
        cache.index[states] = index
        return index

    def _current_cache(self) -> _DfaCache:
        cache = self._cache
        if cache is None or cache.over_budget():
            with _LOCK:
                if self._cache is None or self._cache.over_budget():
                    self._cache = self._new_cache()
                cache = self._cache
        return cache

    def _step(self, cache: _DfaCache, state: int, char: str) -> int:
        """The DFA state after `char`, computed from the NFA on a cache miss."""
        with _LOCK:
            known = cache.transitions[state].get(char)
            if known is not None:
                return known
            states = self._states
            moved = []
            for index in cache.sets[state]:
                kind, test, following = states[index]
                if kind == _CHAR and test(char):
                    moved.append(following)
            target = self._intern(cache, self._closure(moved, at_start=False))
            cache.transitions[state][char] = target
            cache.transition_count += 1
            return target

    # queries -----------------------------------------------------------------------------

    def fullmatch(self, text: str) -> bool:
        cache = self._current_cache()
        transitions = cache.transitions
        state = _START
        for char in text:
            following = transitions[state].get(char)
            if following is None:
                following = self._step(cache, state, char)
            if following == _DEAD:
                return False
            state = following
        return cache.accepting[state]

    def prefix_ends(self, text: str, start: int = 0, *, shortest: bool) -> int:
        """The end of the shortest (or longest) match of the pattern at `start`; -1 if none."""
        cache = self._current_cache()
        transitions = cache.transitions
        accepting = cache.accepting
        state = _START
        found = start if accepting[state] else -1
        if found >= 0 and shortest:
            return found
        for position in range(start, len(text)):
            char = text[position]
            following = transitions[state].get(char)
            if following is None:
                following = self._step(cache, state, char)
            if following == _DEAD:
                break
            state = following
            if accepting[state]:
                found = position + 1
                if shortest:
                    break
        return found

    def prefix_matches(self, text: str) -> list[bool]:
        """`result[k]`: whether the pattern matches `text[:k]`, for every k from 0 to len(text)."""
        cache = self._current_cache()
        transitions = cache.transitions
        accepting = cache.accepting
        state = _START
        result = [accepting[state]]
        for char in text:
            following = transitions[state].get(char)
            if following is None:
                following = self._step(cache, state, char)
            if following == _DEAD:
                result.extend([False] * (len(text) + 1 - len(result)))
                break
            state = following
            result.append(accepting[state])
        return result

    def matches_path_or_parent(self, path: str) -> bool:
        """Whether `path` or one of its parent directories (a prefix ending before a `/`) matches."""
        cache = self._current_cache()
        transitions = cache.transitions
        accepting = cache.accepting
        state = _START
        for char in path:
            if char == "/" and accepting[state]:
                return True
            following = transitions[state].get(char)
            if following is None:
                following = self._step(cache, state, char)
            if following == _DEAD:
                return False
            state = following
        return accepting[state]


# ---- the regular-expression subset the `.dockerignore` translation emits ------------------


def parse_regex_subset(regex: str) -> Node:
    """Read a regular expression made of literals, `\\`-escapes of punctuation, `.`, classes,
    `(...)`, `*`, `?` and `^`, with a single `$` at the very end; Python's `re` rules (classes
    with ranges and `^` negation, a `]` first in a class is literal, `.` matches newlines).

    Raises ValueError for anything else (the caller reports the pattern as invalid).
    """
    return _RegexSubsetParser(regex).sequence(inside_group=False)


class _RegexSubsetParser:
    def __init__(self, regex: str) -> None:
        self.regex = regex
        self.position = 0

    def sequence(self, inside_group: bool) -> Seq:
        regex = self.regex
        items: list[Node] = []
        while self.position < len(regex):
            char = regex[self.position]
            self.position += 1
            if char == ")":
                if inside_group:
                    return Seq(tuple(items))
                raise ValueError("unbalanced parenthesis")
            if char in "*?":
                if not items or isinstance(items[-1], (AtStart, Star, Optional)):
                    raise ValueError("nothing to repeat" if not items else "multiple repeat")
                items[-1] = Star(items[-1]) if char == "*" else Optional(items[-1])
                continue
            if char == "(":
                items.append(self.sequence(inside_group=True))
            elif char == "[":
                items.append(Char(self.char_class()))
            elif char == "\\":
                items.append(Char(CharTest.literal(self.escaped())))
            elif char == ".":
                items.append(Char(ANY))
            elif char == "^":
                items.append(AtStart())
            elif char == "$":
                if self.position != len(regex) or inside_group:
                    raise ValueError("'$' is only supported at the end")
            elif char in "+{|":
                raise ValueError(f"unsupported regular expression operator {char!r}")
            else:
                items.append(Char(CharTest.literal(char)))
        if inside_group:
            raise ValueError("missing ), unterminated subpattern")
        return Seq(tuple(items))

    def escaped(self) -> str:
        if self.position >= len(self.regex):
            raise ValueError("bad escape (end of pattern)")
        char = self.regex[self.position]
        self.position += 1
        if char.isascii() and char.isalnum():
            raise ValueError(f"unsupported escape \\{char}")
        return char

    def char_class(self) -> CharTest:
        regex = self.regex
        negate = self.position < len(regex) and regex[self.position] == "^"
        if negate:
            self.position += 1
        chars: set[str] = set()
        ranges: list[tuple[str, str]] = []
        count = 0
        while True:
            if self.position >= len(regex):
                raise ValueError("unterminated character set")
            this = regex[self.position]
            self.position += 1
            if this == "]" and count:
                break
            low = self.escaped() if this == "\\" else this
            count += 1
            if self.position < len(regex) and regex[self.position] == "-":
                self.position += 1
                if self.position >= len(regex):
                    raise ValueError("unterminated character set")
                that = regex[self.position]
                self.position += 1
                if that == "]":
                    chars.update((low, "-"))
                    break
                high = self.escaped() if that == "\\" else that
                if high < low:
                    raise ValueError(f"bad character range {low}-{high}")
                ranges.append((low, high))
            else:
                chars.add(low)
        return shared_test(frozenset(chars), tuple(ranges), negate)
