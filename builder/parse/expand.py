"""Docker's word processing: quote removal and `$VAR` substitution, as BuildKit's shell lexer does.

- single quotes keep everything literal (no escapes inside);
- double quotes allow `$` expansion; the escape character escapes only `"`, `$` and itself there;
- outside quotes the escape character makes the next character literal (and is dropped);
- `$V`, `${V}`, `${V:-w}`, `${V-w}`, `${V:+w}`, `${V+w}`, `${V:?msg}`, `${V?msg}`,
  `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}` (glob patterns), `${V/p/r}`, `${V//p/r}`;
- an unset variable expands to the empty string.

The shell patterns are matched by `builder.parse.wildcard` in time linear in the value, never by
a backtracking `re`; nesting and the length of what one expansion produces are bounded.

`expand_words` also splits into words on whitespace that is neither quoted nor escaped, and
on whitespace produced by an unquoted expansion, the way ProcessWords does.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from builder.errors import ExpansionError, Pos
from builder.parse.wildcard import ANY, Char, CharTest, Matcher, Node, Seq, Star, check_pattern_length, reverse

_SPECIAL_PARAMS = "@*#?-$!0"
# `${a:-${b:-...}}` nests by recursion; far past anything real, stop with an error rather than
# let Python's recursion limit end it with a traceback.
MAX_SUBSTITUTION_DEPTH = 64
# The longest word one expansion may produce. `ARG B=$A$A$A$A` after `ARG A=...` multiplies
# the length with every line, reaching gigabytes in a dozen lines; a value that large cannot
# reach a RUN anyway (Linux refuses an environment string over 128 KiB in execve), so 1 MiB
# leaves room for long labels and stops the growth.
MAX_EXPANDED_LENGTH = 1 << 20


class _Words:
    """Collects words the way BuildKit's wordsStruct does."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.current: list[str] = []
        self.in_word = False

    def add_char(self, char: str) -> None:
        if char.isspace() and self.in_word:
            self.words.append("".join(self.current))
            self.current = []
            self.in_word = False
        elif not char.isspace():
            self.add_raw_char(char)

    def add_raw_char(self, char: str) -> None:
        self.current.append(char)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for char in text:
            self.add_char(char)

    def add_raw_string(self, text: str) -> None:
        self.current.append(text)
        self.in_word = True

    def result(self) -> list[str]:
        if self.in_word:
            self.words.append("".join(self.current))
            self.current = []
            self.in_word = False
        return self.words


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str, pos: Pos | None) -> None:
        self.text = text
        self.index = 0
        self.env = env
        self.escape = escape
        self.pos = pos
        self.depth = 0  # ${...} substitutions open around the current character

    # ---- scanner ------------------------------------------------------------------------

    def peek(self) -> str:
        return self.text[self.index] if self.index < len(self.text) else ""

    def next(self) -> str:
        char = self.peek()
        if char:
            self.index += 1
        return char

    def fail(self, message: str) -> ExpansionError:
        return ExpansionError(message, pos=self.pos, hint="check the quotes and ${...} in this word")

    # ---- the word -----------------------------------------------------------------------

    def process(self, stop: str = "", raw_escapes: bool = False) -> tuple[str, list[str]]:
        """Read up to one of the `stop` characters (or the end): the processed text and its words.

        The stop character hit is left in `self.stopped_at`.
        """
        result: list[str] = []
        words = _Words()
        produced = 0
        while self.peek():
            char = self.peek()
            if stop and char in stop:
                self.stopped_at = self.next()
                return "".join(result), words.result()
            if char == "'":
                part = self.single_quoted()
                result.append(part)
                words.add_raw_string(part)
            elif char == '"':
                part = self.double_quoted()
                result.append(part)
                words.add_raw_string(part)
            elif char == "$":
                part = self.dollar()
                result.append(part)
                words.add_string(part)
                produced = self.grown(produced, part)
            else:
                char = self.next()
                if char == self.escape:
                    if raw_escapes:
                        words.add_raw_char(char)
                        result.append(char)
                    char = self.next()
                    if not char:
                        break  # an escape at the very end is dropped
                    words.add_raw_char(char)
                else:
                    words.add_char(char)
                result.append(char)
        if stop:
            raise self.fail(f"unexpected end of statement while looking for matching {stop[-1]}")
        return "".join(result), words.result()

    def grown(self, produced: int, part: str) -> int:
        """The substituted length so far plus `part`; an error past MAX_EXPANDED_LENGTH."""
        produced += len(part)
        if produced > MAX_EXPANDED_LENGTH:
            raise ExpansionError(
                f"variable expansion produces more than {MAX_EXPANDED_LENGTH} characters", pos=self.pos,
                hint="a value this large is a mistake, or a Buildfile made to exhaust memory",
            )
        return produced

    def single_quoted(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            char = self.next()
            if not char:
                raise self.fail("unexpected end of statement while looking for matching single-quote")
            if char == "'":
                return "".join(out)
            out.append(char)

    def double_quoted(self) -> str:
        self.next()
        out: list[str] = []
        produced = 0
        while True:
            char = self.peek()
            if not char:
                raise self.fail("unexpected end of statement while looking for matching double-quote")
            if char == '"':
                self.next()
                return "".join(out)
            if char == "$":
                part = self.dollar()
                out.append(part)
                produced = self.grown(produced, part)
                continue
            char = self.next()
            if char == self.escape:
                following = self.peek()
                if not following:
                    continue  # an escape at the end of the word is dropped
                if following in ('"', "$", self.escape):
                    char = self.next()
            out.append(char)

    def name(self) -> str:
        out: list[str] = []
        while self.peek():
            char = self.peek()
            if not out and char.isdigit():
                while self.peek().isdigit():
                    out.append(self.next())
                return "".join(out)
            if not out and char in _SPECIAL_PARAMS:
                return self.next()
            if not (char.isalnum() or char == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def dollar(self) -> str:
        self.next()  # the $
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            return self.env.get(name, "")
        self.next()  # the {
        if self.depth >= MAX_SUBSTITUTION_DEPTH:
            raise ExpansionError(
                f"variable substitutions nested more than {MAX_SUBSTITUTION_DEPTH} deep",
                pos=self.pos, hint="flatten the ${...} nesting (set an ARG or ENV in between)",
            )
        self.depth += 1
        try:
            return self.braced()
        finally:
            self.depth -= 1

    def braced(self) -> str:
        """The rest of `${...}` after the `{`."""
        if not self.peek():
            raise self.fail("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise self.fail("syntax error: bad substitution")
        name = self.name()
        operator = self.next()
        if operator == "}":
            return self.env.get(name, "")
        if not operator:
            raise self.fail("syntax error: missing '}'")
        null_is_unset = False
        if operator == ":":
            null_is_unset = True
            operator = self.next()
            if operator in ("#", "%", ""):
                raise self.fail(f"unsupported modifier (:{operator}) in substitution")
        if operator in "+-?#%" and operator:
            pattern_operator = operator in "#%"
            word = self.operand("}", raw_escapes=pattern_operator)
            value = self.env.get(name)
            is_set = value is not None and not (null_is_unset and value == "")
            if operator == "-":
                return value if is_set else word  # type: ignore[return-value]
            if operator == "+":
                return word if is_set else ""
            if operator == "?":
                if value is None:
                    raise self.fail(f"{name}: {word or 'is not allowed to be unset'}")
                if null_is_unset and value == "":
                    raise self.fail(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            greedy = word.startswith(operator)
            if greedy:
                word = word[1:]
            try:
                if operator == "#":
                    return _trim_prefix(word, value or "", greedy)
                return _trim_suffix(word, value or "", greedy)
            except ValueError as error:
                raise self.bad_pattern(word, error) from None
        if operator == "/" and not null_is_unset:
            replace_all = self.peek() == "/"
            if replace_all:
                self.next()
            pattern = self.operand("/}", raw_escapes=True)
            replacement = self.operand("}") if self.stopped_at == "/" else ""
            try:
                return _replace(pattern, replacement, self.env.get(name, ""), replace_all)
            except ValueError as error:
                raise self.bad_pattern(pattern, error) from None
        raise self.fail(f"unsupported modifier ({':' if null_is_unset else ''}{operator}) in substitution")

    stopped_at = ""

    def bad_pattern(self, pattern: str, error: ValueError) -> ExpansionError:
        shown = pattern if len(pattern) <= 100 else pattern[:100] + "..."
        return ExpansionError(
            f"invalid pattern {shown!r} in substitution: {error}", pos=self.pos,
            hint="shell patterns use * ? [a-z] [!a] and \\ to escape; a range goes from low to high",
        )

    def operand(self, stop: str, *, raw_escapes: bool = False) -> str:
        """The word after an operator, itself expanded, up to a `stop` character."""
        try:
            word, _ = self.process(stop, raw_escapes=raw_escapes)
        except ExpansionError:
            if not self.peek():
                raise self.fail("syntax error: missing '}'") from None
            raise
        return word


def shell_pattern(pattern: str) -> Node:
    """A shell pattern (`*`, `?`, `[...]`, `[!...]`, `\\x`) as a pattern tree for `wildcard.Matcher`.

    `*` matches any run of characters (newlines and `/` included), `?` any one. A class lists
    characters and ranges (`a-z`; a `-` first or last, and a `]` right after `[` or `[!`, are
    literal; `\\` and `^` are literal inside); `[!...]` and `[^...]` negate; a `[` without a
    closing `]` is a literal `[`. Raises ValueError for a reversed range such as `[z-a]`, and
    for a pattern past `wildcard.MAX_PATTERN_LENGTH`.
    """
    check_pattern_length(pattern)
    items: list[Node] = []
    index = 0
    length = len(pattern)
    while index < length:
        char = pattern[index]
        if char == "\\" and index + 1 < length:
            index += 1
            items.append(Char(CharTest.literal(pattern[index])))
        elif char == "*":
            if not (items and isinstance(items[-1], Star)):  # `**` is `*`
                items.append(Star(Char(ANY)))
        elif char == "?":
            items.append(Char(ANY))
        elif char == "[":
            body_start = index + 1
            negate = pattern[body_start : body_start + 1] in ("!", "^")
            if negate:
                body_start += 1
            end = pattern.find("]", body_start + 1)  # a `]` first in the body is a member
            if end == -1:
                items.append(Char(CharTest.literal(char)))
            else:
                items.append(Char(_shell_class(pattern[body_start:end], negate)))
                index = end
        else:
            items.append(Char(CharTest.literal(char)))
        index += 1
    return Seq(tuple(items))


def _shell_class(body: str, negate: bool) -> CharTest:
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    index = 0
    while index < len(body):
        low = body[index]
        if index + 2 < len(body) and body[index + 1] == "-":
            high = body[index + 2]
            if high < low:
                raise ValueError(f"bad character range {low}-{high} in [{body}]")
            ranges.append((low, high))
            index += 3
        else:
            chars.add(low)
            index += 1
    return CharTest(frozenset(chars), tuple(ranges), negate)


@lru_cache(maxsize=256)
def _matcher(pattern: str, direction: str) -> Matcher:
    """`forward`: the pattern; `backward`: it reversed; `search`: `*` then it reversed."""
    node = shell_pattern(pattern)
    if direction == "forward":
        return Matcher(node)
    if direction == "backward":
        return Matcher(reverse(node))
    return Matcher(Seq((Star(Char(ANY)), reverse(node))))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    """`${V#p}` (shortest matching prefix removed) and `${V##p}` (longest)."""
    end = _matcher(pattern, "forward").prefix_ends(value, shortest=not greedy)
    return value[end:] if end >= 0 else value


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    """`${V%p}` and `${V%%p}`: a prefix of the reversed value is a suffix of the value."""
    length = _matcher(pattern, "backward").prefix_ends(value[::-1], shortest=not greedy)
    return value[: len(value) - length] if length >= 0 else value


def _replace(pattern: str, replacement: str, value: str, replace_all: bool) -> str:
    """`${V/p/r}`, `${V//p/r}`: what Python's `re.sub` did with the pattern's regex (leftmost
    match, `*` greedy, so the longest match at that start; an empty match right after a
    match is replaced too), found without backtracking.
    """
    if not pattern:
        return value
    forward = _matcher(pattern, "forward")
    # starts[i]: a match begins at i (the reversed value has a match of the reversed pattern
    # ending at len(value) - i).
    ends_reversed = _matcher(pattern, "search").prefix_matches(value[::-1])
    starts = ends_reversed[::-1]
    out: list[str] = []
    copied = 0
    position = 0
    must_advance = False  # after an empty match, the next one may not be empty at the same place
    while position <= len(value):
        start = position
        while start <= len(value) and not starts[start]:
            start += 1
        if start > len(value):
            break
        end = forward.prefix_ends(value, start, shortest=False)
        if must_advance and start == position and end == start:
            position += 1
            must_advance = False
            continue
        out.append(value[copied:start])
        out.append(replacement)
        copied = end
        if not replace_all:
            break
        must_advance = end == start
        position = end
    out.append(value[copied:])
    return "".join(out)


def expand_word(raw: str, env: Mapping[str, str], *, pos: Pos | None = None, escape: str = "\\") -> str:
    """One raw word after Docker's quote removal and substitution; unquoted spaces are kept."""
    text, _ = _Lexer(raw, env, escape, pos).process()
    return text


def expand_words(raw: str, env: Mapping[str, str], *, pos: Pos | None = None, escape: str = "\\") -> list[str]:
    """Like expand_word, then split where Docker's ProcessWords splits (unquoted whitespace)."""
    _, words = _Lexer(raw, env, escape, pos).process()
    return words
