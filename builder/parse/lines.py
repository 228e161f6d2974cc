"""The pre-pass: what a context-free grammar cannot do, done the way Docker's parser does it.

- parser directives (`# syntax=`, `# escape=`, `# check=`), only at the very top;
- the escape character and line continuations (comment and blank lines inside a continuation
  are skipped; whitespace after the escape character at the end of a line still continues; two
  escape characters at the end of a line are an escaped escape, not a continuation);
- heredoc bodies for RUN, COPY and ADD.

The result is one `LogicalLine` per instruction: its joined text (what the grammar parses),
a map from offsets in that text back to file positions, the original source and the heredocs.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field

from builder.errors import ParseError, Pos
from builder.parse.ast import Heredoc

VALID_DIRECTIVES = ("syntax", "escape", "check")
# BuildKit's limit on one physical line ("dockerfile line greater than max allowed size of
# 65535", Go's bufio.Scanner token size), heredoc body lines included.
MAX_LINE_BYTES = 65535
# The whole Buildfile. Docker has no such limit, but parsing costs memory: measured up to ~300
# bytes per byte of text for the worst shapes (170 000 one-word instructions; 500 000 one-letter
# words joined by continuation lines: ~230), so 1 MiB keeps the plan of any Buildfile under
# ~350 MB and ~10 s, far above real Buildfiles (tens of KiB).
MAX_BUILDFILE_BYTES = 1 << 20
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_HEREDOC_INSTRUCTIONS = frozenset({"run", "copy", "add"})
_BOM = "\ufeff"


@dataclass
class LogicalLine:
    """One instruction after continuation joining, with the means to point back into the file."""

    text: str  # continuation characters removed, skipped lines dropped
    first_line: int
    last_line: int  # last physical line, heredoc terminators included
    source: str  # the original lines, first to last, joined by "\n"
    source_first_line: str  # the physical line the instruction starts on
    # (offset in text, line, column) at the start of each physical line's contribution
    segments: list[tuple[int, int, int]] = field(default_factory=list)
    heredocs: list[Heredoc] = field(default_factory=list)

    def position(self, offset: int) -> tuple[int, int]:
        """File (line, column), 1-based, of a character offset in `text`."""
        starts = [segment[0] for segment in self.segments]
        index = max(bisect_right(starts, offset) - 1, 0)
        start, line, column = self.segments[index]
        return line, column + (offset - start)


@dataclass
class Prepared:
    """What the pre-pass hands to the grammar."""

    escape: str
    directives: list[tuple[str, str]]
    lines: list[LogicalLine]
    physical: list[str]  # the file's lines, for error messages


def _fail(message: str, path: str, physical: list[str], line: int, column: int, hint: str) -> ParseError:
    source_line = physical[line - 1] if 0 < line <= len(physical) else None
    return ParseError(message, pos=Pos(path, line, column), hint=hint, source_line=source_line)


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _column_past(line: str, limit: int) -> int:
    """The 1-based column of the character whose last byte is past `limit` bytes of `line`."""
    total = 0
    for index, char in enumerate(line):
        total += len(char.encode("utf-8", "surrogatepass"))
        if total > limit:
            return index + 1
    return len(line) + 1


def check_size(physical: list[str], path: str, *, truncated: bool = False) -> None:
    """Refuse a line longer than MAX_LINE_BYTES, then a text longer than MAX_BUILDFILE_BYTES.

    `truncated`: `physical` is only the first MAX_BUILDFILE_BYTES + 1 bytes of a longer file.
    """
    total = 0
    crossed_at: int | None = None
    for number, line in enumerate(physical, start=1):
        length = _utf8_length(line)
        if length > MAX_LINE_BYTES:
            # No source line in the error: it would print the whole line and a caret that far.
            raise ParseError(
                f"line {number} is longer than {MAX_LINE_BYTES} bytes (BuildKit's limit)",
                pos=Pos(path, number, _column_past(line, MAX_LINE_BYTES)),
                hint="split the line with continuation lines, or move long data into a file in the context",
            )
        total += length + 1  # and its newline
        if crossed_at is None and total > MAX_BUILDFILE_BYTES:
            crossed_at = number
    if crossed_at is not None or truncated:
        raise ParseError(
            f"the Buildfile is larger than {MAX_BUILDFILE_BYTES} bytes",
            pos=Pos(path, crossed_at or len(physical) or 1, 1),
            hint="a Buildfile this large is refused to bound the memory parsing takes;"
            " move data into files in the context",
        )


def split_physical_lines(text: str) -> list[str]:
    """Lines as Go's bufio.ScanLines gives them: split on \\n, a trailing \\r dropped."""
    if text.startswith(_BOM):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # text ending in a newline has no extra empty line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _read_directives(physical: list[str], path: str) -> tuple[str, list[tuple[str, str]]]:
    escape = "\\"
    found: list[tuple[str, str]] = []
    for number, line in enumerate(physical, start=1):
        match = _DIRECTIVE.match(line.lstrip())
        if not match:
            break
        name = match.group(1).lower()
        if name not in VALID_DIRECTIVES:
            break  # an unknown directive is a comment, and ends the directive block
        if any(seen == name for seen, _ in found):
            raise _fail(
                f"only one {name} parser directive can be used", path, physical, number,
                line.find("#") + 1, "remove the repeated directive",
            )
        value = match.group(2)
        if name == "escape":
            if value not in ("\\", "`"):
                raise _fail(
                    f"invalid escape token '{value}' does not match ` or \\", path, physical,
                    number, line.find(value, line.find("=")) + 1, "use `# escape=\\` or `# escape=``",
                )
            escape = value
        found.append((name, value))
    return escape, found


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _continuation(escape: str) -> re.Pattern[str]:
    """BuildKit's continuation rule: the escape character ends the line (spaces and tabs may
    follow) and is not itself escaped, i.e. not preceded by another escape character, so
    `ENV A x\\\\` ends its instruction. Like BuildKit, an escape after an escaped escape
    (`x\\\\\\`) does not continue either."""
    escaped = re.escape(escape)
    return re.compile(rf"(?:(?<=[^{escaped}])|^){escaped}[ \t]*$")


def heredoc_markers(text: str) -> list[tuple[int, str, bool, bool]]:
    """Heredoc markers in an instruction line: (offset, name, expand, strip_tabs).

    As Docker does: split the line into shell words keeping quotes and escapes (always `\\`
    here, whatever the escape directive), then a word `[n]<<[-]NAME` is a heredoc; a NAME with
    quotes in it turns expansion off.
    """
    markers: list[tuple[int, str, bool, bool]] = []
    for offset, word in _raw_shell_words(text):
        match = _HEREDOC_WORD.match(word)
        if not match or not match.group(3):
            continue
        rest = match.group(3)
        name, had_quotes, single_word = _unquote_heredoc_name(rest)
        if not single_word or not name:
            continue
        markers.append((offset, name, not had_quotes, match.group(2) == "-"))
    return markers


def _raw_shell_words(text: str) -> list[tuple[int, str]]:
    words: list[tuple[int, str]] = []
    index, length = 0, len(text)
    while index < length:
        while index < length and text[index].isspace():
            index += 1
        if index >= length:
            break
        start = index
        quote = ""
        while index < length:
            char = text[index]
            if quote:
                if char == "\\" and quote == '"' and index + 1 < length:
                    index += 2
                    continue
                if char == quote:
                    quote = ""
            elif char.isspace():
                break
            elif char in "'\"":
                quote = char
            elif char == "\\":
                index += 1
            index += 1
        words.append((start, text[start:index]))
    return words


def _unquote_heredoc_name(rest: str) -> tuple[str, bool, bool]:
    """(name with quotes removed, whether quotes were removed, whether it is one word)."""
    out: list[str] = []
    quote = ""
    had_quotes = False
    index = 0
    while index < len(rest):
        char = rest[index]
        if quote:
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"' and index + 1 < len(rest) and rest[index + 1] in '"\\$':
                index += 1
                out.append(rest[index])
            else:
                out.append(char)
        elif char in "'\"":
            quote = char
            had_quotes = True
        elif char == "\\":
            index += 1
            if index < len(rest):
                out.append(rest[index])
        elif char.isspace():
            return "".join(out), had_quotes, False
        else:
            out.append(char)
        index += 1
    return "".join(out), had_quotes, True


def prepare(text: str, path: str) -> Prepared:
    """Run the pre-pass over a whole Buildfile."""
    physical = split_physical_lines(text)
    check_size(physical, path)
    escape, directives = _read_directives(physical, path)
    continues = _continuation(escape)
    logical: list[LogicalLine] = []
    count = len(physical)
    index = 0
    while index < count:
        raw = physical[index]
        first_number = index + 1
        stripped = raw.lstrip()
        index += 1
        if not stripped or stripped.startswith("#"):
            continue  # blank line, comment, or a parser directive (already read)
        pieces: list[str] = []
        segments: list[tuple[int, int, int]] = []
        length = 0

        # Called only within this iteration, so the lists it fills are this line's.
        def take(content: str, number: int, column: int) -> bool:
            nonlocal length
            match = continues.search(content)
            if match:
                content = content[: match.start()]
            segments.append((length, number, column))  # noqa: B023
            pieces.append(content)  # noqa: B023
            length += len(content)
            return match is not None

        more = take(stripped, first_number, len(raw) - len(stripped) + 1)
        last_number = first_number
        while more and index < count:
            raw = physical[index]
            index += 1
            last_number = index
            if _is_comment(raw) or not raw.strip():
                continue  # skipped inside a continuation, as Docker does
            more = take(raw, index, 1)
        line = LogicalLine(
            text="".join(pieces),
            first_line=first_number,
            last_line=last_number,
            source="",
            source_first_line=physical[first_number - 1],
            segments=segments,
        )
        if not line.text.strip():
            continue  # only continuation characters: nothing to parse
        keyword = line.text.split(None, 1)[0].lower()
        if keyword in _HEREDOC_INSTRUCTIONS and "<<" in line.text:
            index = _read_heredocs(line, physical, index, path)
        line.source = "\n".join(physical[first_number - 1 : line.last_line])
        logical.append(line)
    return Prepared(escape=escape, directives=directives, lines=logical, physical=physical)


def _read_heredocs(line: LogicalLine, physical: list[str], index: int, path: str) -> int:
    """Consume the bodies of the heredocs named on `line`; return the next line index."""
    for offset, name, expand, strip_tabs in heredoc_markers(line.text):
        body: list[str] = []
        terminated = False
        while index < len(physical):
            raw = physical[index]
            index += 1
            candidate = raw.lstrip("\t") if strip_tabs else raw
            if candidate == name:
                terminated = True
                break
            body.append(candidate)
        line.last_line = index
        if not terminated:
            number, column = line.position(offset)
            raise _fail(
                f"unterminated heredoc <<{name}", path, physical, number, column,
                f"end the heredoc with a line holding only {name}",
            )
        content = "".join(part + "\n" for part in body)
        line.heredocs.append(Heredoc(delimiter=name, content=content, expand=expand, strip_tabs=strip_tabs))
    return index
