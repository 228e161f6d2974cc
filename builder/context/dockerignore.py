"""`.dockerignore` matching with Docker's exact semantics.

Facts followed (moby/patternmatcher and its `ignorefile.ReadAll`, the Dockerfile reference):

* A line whose *first character* is `#` is a comment (a line starting with spaces then `#` is a
  pattern); blank lines are skipped; leading and trailing whitespace is trimmed; a UTF-8 BOM on
  the first line is dropped.
* `!pattern` is an exception; after the `!` the pattern is trimmed again.
* Each pattern is `filepath.Clean`ed (so `./a`, `a/`, `a//b`, `a/./b`, `a/x/../b` normalise), and
  then one leading `/` is stripped: patterns are always relative to the context root.
* A path is ignored when the *last* pattern that matches it (or one of its parent directories) is
  an inclusion; exceptions later in the list re-include. A pattern that matches a directory
  therefore ignores everything below it unless a later `!` pattern re-includes a path below.
* `*` matches any run of characters except `/`, `?` one character except `/`, `[...]` is a
  character class (`[^...]` negates, Go regexp syntax), `\\x` escapes `x`, and `**` matches any
  number of directories (zero included). A pattern ending in `**` matches by prefix, one
  starting with `**` by suffix (these are patternmatcher's fast paths and keep their quirks,
  e.g. `**foo` also matches `barfoo`).

Why not pathspec: pathspec implements gitignore, which differs from Docker in ways that change
results, so using it would be wrong, not just different:
  - gitignore matches a slash-less pattern (`*.o`) at any depth; Docker anchors every pattern at
    the context root (`*.o` does not match `a/b.o`, you need `**/*.o`);
  - git cannot re-include a file whose parent directory is excluded; Docker can
    (`dir` then `!dir/keep` keeps `dir/keep`), and the walk must know it (`may_contain_exceptions`);
  - gitignore gives a trailing `/` meaning ("directories only"); Docker cleans it away.
Each of these is checked in tests/context/test_dockerignore.py.

The Buildfile and the ignore file themselves: Docker still *sends* them to the daemon when they
are ignored, but `COPY`/`ADD` do not see them ("the ADD and COPY instructions do not copy them
to the image"). This builder reads the Buildfile itself, so the matcher needs no special case:
an ignored Buildfile is invisible to COPY, as in Docker.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from builder.context.inroot import read_limited, relative_to_context, resolve_in_context
from builder.errors import ContextError, Pos
from builder.parse.wildcard import Matcher, check_pattern_length, parse_regex_subset

# Docker has no limit; patterns cost memory (~2 KB each once used: at most ~360 MB for 1 MiB of
# one-star lines) and every one is tried on every path, so a file larger than any real one
# (they hold tens of lines) is refused, like an oversized Buildfile.
MAX_IGNORE_FILE_BYTES = 1 << 20
_REGEX_SPECIALS = set(".+()|{}$")


def go_clean(path: str) -> str:
    """Go's `filepath.Clean` on a slash path: lexical, `..` at the root of an absolute path vanishes."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def clean_ignore_lines(lines: Iterable[str]) -> list[str]:
    """`ignorefile.ReadAll`: comments, blanks, trimming, Clean, leading `/` stripped."""
    return [pattern for _, pattern in _clean_numbered(lines)]


def _clean_numbered(lines: Iterable[str]) -> list[tuple[int, str]]:
    """The cleaned patterns with the 1-based line each came from (for error positions)."""
    cleaned: list[tuple[int, str]] = []
    for index, raw in enumerate(lines):
        line = raw.rstrip("\r\n")
        if index == 0 and line.startswith("\ufeff"):
            line = line[1:]
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = go_clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        cleaned.append((index + 1, "!" + line if invert else line))
    return cleaned


@dataclass(slots=True)
class _Pattern:
    """One compiled pattern, matched the way patternmatcher's `Pattern.match` does."""

    text: str  # cleaned, without the leading `!`
    exclusion: bool  # True for a `!` exception
    kind: str  # exact | prefix | suffix | regexp
    regex: Matcher | None  # patternmatcher's regular expression, matched without backtracking

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regex is not None
        return self.regex.fullmatch(path)

    def match_path_or_parent(self, path: str, parent_dirs: list[str]) -> bool:
        """patternmatcher's MatchesOrParentMatches for this one pattern."""
        if self.regex is not None:
            return self.regex.matches_path_or_parent(path)  # one pass over the path
        if self.match(path):
            return True
        return any(self.match("/".join(parent_dirs[: i + 1])) for i in range(len(parent_dirs)))


def _compile(text: str, exclusion: bool) -> _Pattern:
    """One cleaned pattern, compiled the way patternmatcher compiles it."""
    kind, regex = translate(text)
    compiled = _regex_matcher(regex + "$") if kind == "regexp" else None
    return _Pattern(text=text, exclusion=exclusion, kind=kind, regex=compiled)


@lru_cache(maxsize=1024)
def _regex_matcher(regex: str) -> Matcher:
    """The same expression patternmatcher builds, read by a matcher that cannot backtrack (moby
    compiles it with Go's RE2): `a/**/**/**/**/b` stays linear in the path. Shared between
    identical lines, like `re`'s own cache did."""
    return Matcher(parse_regex_subset(regex))


def translate(text: str) -> tuple[str, str]:
    """patternmatcher's match kind for a cleaned pattern, and its regular expression (without
    the final `$`), which only the `regexp` kind uses."""
    regex = "^"
    kind = "exact"
    i = 0
    n = len(text)
    first = True
    while i < n:
        ch = text[i]
        i += 1
        if ch == "*":
            if i < n and text[i] == "*":
                i += 1
                if i < n and text[i] == "/":  # `**/` behaves as `**`
                    i += 1
                if i >= n:  # trailing `**`: everything below
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        regex += ".*"
                        kind = "regexp"
                else:
                    regex += "(.*/)?"
                    kind = "regexp"
                if first:
                    kind = "suffix"
            else:
                regex += "[^/]*"
                kind = "regexp"
        elif ch == "?":
            regex += "[^/]"
            kind = "regexp"
        elif ch in _REGEX_SPECIALS:
            regex += "\\" + ch
        elif ch == "\\":
            if i < n:
                regex += re.escape(text[i])
                i += 1
                kind = "regexp"
            else:
                regex += "\\\\"
        elif ch in "[]":
            regex += ch
            kind = "regexp"
        else:
            regex += ch  # like patternmatcher: other characters go to the regexp as they are
        first = False
    return kind, regex


def _check_go_pattern_syntax(text: str) -> None:
    """Raise ValueError where Go's `filepath.Match` reports ErrBadPattern (patternmatcher calls it
    on every pattern): unclosed `[`, an empty or malformed class (`[]a]`, `[-x]`, `[x-]`,
    `[a-b-c]`), a trailing `\\`."""
    n = len(text)

    def class_char(i: int) -> int:
        # Go's getEsc: one (possibly escaped) character of a class, never `-` or `]` unescaped
        if i >= n or text[i] in "-]":
            raise ValueError("syntax error in pattern")
        if text[i] == "\\":
            i += 1
            if i >= n:
                raise ValueError("syntax error in pattern")
        i += 1
        if i >= n:
            raise ValueError("syntax error in pattern")
        return i

    i = 0
    while i < n:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= n:
                raise ValueError("syntax error in pattern")
            i += 2
        elif ch == "[":
            i += 1
            if i < n and text[i] == "^":
                i += 1
            ranges = 0
            while True:
                if i < n and text[i] == "]" and ranges > 0:
                    i += 1
                    break
                i = class_char(i)
                if text[i] == "-":
                    i = class_char(i + 1)
                ranges += 1
        else:
            i += 1


class IgnoreMatcher:
    """Decides which context paths are invisible to COPY/ADD."""

    def __init__(
        self, patterns: list[str], *, source: str | None = None, line_numbers: list[int] | None = None
    ) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        self.source = source
        self._compiled: list[_Pattern] = []
        numbers = line_numbers or list(range(1, len(patterns) + 1))
        for number, pattern in zip(numbers, patterns, strict=True):
            text = pattern.strip()
            if not text:
                continue
            exclusion = text.startswith("!")
            if exclusion:
                if len(text) == 1:
                    raise self._error('illegal exclusion pattern: "!"', number)
                text = text[1:]
            try:
                check_pattern_length(text)
                _check_go_pattern_syntax(text)
                self._compiled.append(_compile(text, exclusion))
            except ValueError as exc:
                shown = pattern if len(pattern) <= 100 else pattern[:100] + "..."
                raise self._error(f"invalid pattern {shown!r}: {exc}", number) from None

    def _error(self, message: str, number: int) -> ContextError:
        where = Pos(self.source, number) if self.source else None
        return ContextError(
            message,
            pos=where,
            hint=f"fix line {number} of {self.source or 'the ignore patterns'}"
            " (Go filepath.Match syntax: * ? [a-z] [^a] \\x)",
        )

    # construction -------------------------------------------------------------------------

    @classmethod
    def empty(cls) -> "IgnoreMatcher":
        return cls([])

    @classmethod
    def from_lines(cls, lines: Iterable[str], *, source: str | None = None) -> "IgnoreMatcher":
        numbered = _clean_numbered(lines)
        return cls([p for _, p in numbered], source=source, line_numbers=[n for n, _ in numbered])

    @classmethod
    def load(cls, context_dir: Path, buildfile: Path | None = None) -> "IgnoreMatcher":
        """`<buildfile name>.dockerignore` beside the Buildfile wins over `<context>/.dockerignore`.

        An ignore file in the context is read with its symlinks resolved inside the context
        (one leading out of it is a ContextError, its target never read); one beside a
        Buildfile outside the context is the user's own and is read as given.
        """
        candidates: list[Path] = []
        if buildfile is not None:
            buildfile = Path(buildfile)
            candidates.append(buildfile.with_name(buildfile.name + ".dockerignore"))
        candidates.append(Path(context_dir) / ".dockerignore")
        for candidate in candidates:
            inside = relative_to_context(Path(context_dir), candidate)
            if inside is not None:
                host = resolve_in_context(Path(context_dir), inside, "ignore file")
                if host is None or not host.is_file():
                    continue
                data = read_limited(host, MAX_IGNORE_FILE_BYTES, "ignore file", follow_links=False)
            elif candidate.is_file():
                data = read_limited(candidate, MAX_IGNORE_FILE_BYTES, "ignore file", follow_links=True)
            else:
                continue
            if len(data) > MAX_IGNORE_FILE_BYTES:
                raise ContextError(
                    f"{candidate} is larger than {MAX_IGNORE_FILE_BYTES} bytes",
                    hint="an ignore file this large is refused to bound the memory matching takes",
                )
            text = data.decode("utf-8", errors="surrogateescape")
            return cls.from_lines(text.splitlines(), source=str(candidate))
        return cls.empty()

    # queries ------------------------------------------------------------------------------

    def __bool__(self) -> bool:
        return bool(self._compiled)

    def ignored(self, relpath: str, is_dir: bool = False) -> bool:
        """patternmatcher's `MatchesOrParentMatches` on a slash path relative to the context root.

        `is_dir` does not change the answer (Docker patterns have no directory-only form); it is
        accepted so callers can say what they know.
        """
        if not self._compiled:
            return False
        path = go_clean(relpath.lstrip("/")) if relpath else "."
        if path == ".":
            return False  # Docker never lets the context root itself be excluded
        parent = posixpath.dirname(path)
        parent_dirs = parent.split("/") if parent else []
        matched = False
        for pattern in self._compiled:
            if pattern.exclusion != matched:
                continue  # an inclusion after a match, or an exception before one, changes nothing
            if pattern.match_path_or_parent(path, parent_dirs):
                matched = not pattern.exclusion
        return matched

    def may_contain_exceptions(self, reldir: str) -> bool:
        """Whether Docker's context walk enters the ignored directory `reldir` (and sends it).

        fsutil's rule, as the daemon's BuildKit (dockerd 20.10) applies it: only an exception
        whose text, with a `/` added, starts with `reldir/` makes the walk enter; `!dir/*.txt`
        does for `dir`, while `!**/keep` or `!*/sub` never do, so nothing below an ignored dir
        comes back through a wildcard that does not spell the dir out.
        """
        prefix = go_clean(reldir.lstrip("/")) + "/"
        return any(
            pattern.exclusion and (pattern.text + "/").startswith(prefix) for pattern in self._compiled
        )

    def ignored_dir_fully(self, reldir: str) -> bool:
        """The ARCHITECTURE.md name: ignored, and nothing below can be re-included."""
        return self.ignored(reldir, is_dir=True) and not self.may_contain_exceptions(reldir)

    def __repr__(self) -> str:
        return f"IgnoreMatcher({list(self.patterns)!r})"
