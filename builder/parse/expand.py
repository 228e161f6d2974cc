"""Docker's word processing: quote removal and `$VAR` substitution, as BuildKit's shell lexer does.

- single quotes keep everything literal (no escapes inside);
- double quotes allow `$` expansion; the escape character escapes only `"`, `$` and itself there;
- outside quotes the escape character makes the next character literal (and is dropped);
- `$V`, `${V}`, `${V:-w}`, `${V-w}`, `${V:+w}`, `${V+w}`, `${V:?msg}`, `${V?msg}`,
  `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}` (glob patterns), `${V/p/r}`, `${V//p/r}`;
- an unset variable expands to the empty string.

`expand_words` also splits into words on whitespace that is neither quoted nor escaped, and
on whitespace produced by an unquoted expansion, the way ProcessWords does.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from builder.errors import ExpansionError, Pos

_SPECIAL_PARAMS = "@*#?-$!0"


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
        while True:
            char = self.peek()
            if not char:
                raise self.fail("unexpected end of statement while looking for matching double-quote")
            if char == '"':
                self.next()
                return "".join(out)
            if char == "$":
                out.append(self.dollar())
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
            if operator == "#":
                return _trim_prefix(word, value or "", greedy)
            return _trim_suffix(word, value or "", greedy)
        if operator == "/" and not null_is_unset:
            replace_all = self.peek() == "/"
            if replace_all:
                self.next()
            pattern = self.operand("/}", raw_escapes=True)
            replacement = self.operand("}") if self.stopped_at == "/" else ""
            return _replace(pattern, replacement, self.env.get(name, ""), replace_all)
        raise self.fail(f"unsupported modifier ({':' if null_is_unset else ''}{operator}) in substitution")

    stopped_at = ""

    def operand(self, stop: str, *, raw_escapes: bool = False) -> str:
        """The word after an operator, itself expanded, up to a `stop` character."""
        try:
            word, _ = self.process(stop, raw_escapes=raw_escapes)
        except ExpansionError:
            if not self.peek():
                raise self.fail("syntax error: missing '}'") from None
            raise
        return word


def glob_to_regex(pattern: str) -> str:
    """A shell pattern (`*`, `?`, `[...]`, `\\x`) as a Python regex body."""
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


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    matcher = re.compile(glob_to_regex(pattern), re.DOTALL)
    lengths = range(len(value), -1, -1) if greedy else range(len(value) + 1)
    for length in lengths:
        if matcher.fullmatch(value[:length]):
            return value[length:]
    return value


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    matcher = re.compile(glob_to_regex(pattern), re.DOTALL)
    starts = range(len(value) + 1) if greedy else range(len(value), -1, -1)
    for start in starts:
        if matcher.fullmatch(value[start:]):
            return value[:start]
    return value


def _replace(pattern: str, replacement: str, value: str, replace_all: bool) -> str:
    if not pattern:
        return value
    matcher = re.compile(glob_to_regex(pattern), re.DOTALL)
    return matcher.sub(lambda _m: replacement, value, count=0 if replace_all else 1)


def expand_word(raw: str, env: Mapping[str, str], *, pos: Pos | None = None, escape: str = "\\") -> str:
    """One raw word after Docker's quote removal and substitution; unquoted spaces are kept."""
    text, _ = _Lexer(raw, env, escape, pos).process()
    return text


def expand_words(raw: str, env: Mapping[str, str], *, pos: Pos | None = None, escape: str = "\\") -> list[str]:
    """Like expand_word, then split where Docker's ProcessWords splits (unquoted whitespace)."""
    _, words = _Lexer(raw, env, escape, pos).process()
    return words
