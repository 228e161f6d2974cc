"""Load grammar/buildfile.lark once per escape character and keep the compiled LALR parser.

The grammar ships inside the wheel as package data of `builder.grammar` (pyproject maps the
top-level grammar/ dir there); from a source tree it is read from <repo>/grammar/.
Compiling is deferred to the first parse so `import builder` stays fast, and done once per
process and escape character.

Compiling takes ~30 ms; loading the compiled tables takes ~2 ms. So a build keeps them in its
store (`set_cache_dir`): a directory only its owner can write (never a shared temp dir, where
another user could plant a pickle), written atomically, keyed by the grammar, this module and
the Lark and Python versions. Without a cache dir the grammar is compiled.
"""
from __future__ import annotations

import re
import threading
from importlib import resources
from pathlib import Path

from lark import Lark
from lark.lexer import PatternRE, TerminalDef

GRAMMAR_FILE = "buildfile.lark"

# The two definitions the backtick escape mode swaps (see the grammar's comment on _ESC).
_ESC_DEFINITION = re.compile(r'^_ESC: "\\\\"$', re.MULTILINE)
_OTHER_ESC_DEFINITION = re.compile(r'^_OTHER_ESC: "`"$', re.MULTILINE)

_parsers: dict[str, Lark] = {}
_lock = threading.Lock()
_cache_dir: Path | None = None


def set_cache_dir(directory: Path | None) -> None:
    """Keep compiled parsers in `directory` (the store's, private to its owner), or nowhere."""
    global _cache_dir
    _cache_dir = directory


def grammar_text() -> str:
    """The grammar source, from the installed package data or the source tree."""
    try:
        return resources.files("builder.grammar").joinpath(GRAMMAR_FILE).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        source_tree_copy = Path(__file__).resolve().parents[2] / "grammar" / GRAMMAR_FILE
        return source_tree_copy.read_text(encoding="utf-8")


def _grammar_for_escape(escape: str) -> str:
    text = grammar_text()
    if escape == "\\":
        return text
    text, swapped_escape = _ESC_DEFINITION.subn(lambda _m: '_ESC: "`"', text)
    text, swapped_other = _OTHER_ESC_DEFINITION.subn(lambda _m: '_OTHER_ESC: "\\\\"', text)
    if (swapped_escape, swapped_other) != (1, 1):  # grammar and loader drifted apart: a bug
        raise RuntimeError("grammar/buildfile.lark must define _ESC and _OTHER_ESC exactly once")
    return text


def possessive(regex: str) -> str:
    """Every repeated group `(...)*` / `(...)+` made possessive (`*+` / `++`).

    Python's `re` keeps a backtracking record for each pass through a repeated group, so one
    10 MB word (`LABEL a=bbbb...` joined from continuation lines) cost 1.7 GB to lex. The
    grammar's repeated groups are deterministic (each character has one way to match, and what
    follows a repetition cannot start inside it), so never backtracking into them changes no
    match; the grammar tests pin that. Character-class repeats (`[^\\n]*`) need no record.
    """
    out: list[str] = []
    index = 0
    class_body = -1  # where the current character class's body starts in `out`, or -1
    while index < len(regex):
        char = regex[index]
        out.append(char)
        index += 1
        if char == "\\":
            out.append(regex[index : index + 1])
            index += 1
        elif class_body >= 0:
            first = len(out) - 1 == class_body or (len(out) - 2 == class_body and out[class_body] == "^")
            if char == "]" and not first:  # a `]` first in the body is a member
                class_body = -1
        elif char == "[":
            class_body = len(out)
        elif char == ")" and regex[index : index + 1] in ("*", "+") and regex[index + 1 : index + 2] not in ("+", "?"):
            out.append(regex[index] + "+")
            index += 1
    return "".join(out)


def _possessive_terminal(terminal: TerminalDef) -> None:
    if isinstance(terminal.pattern, PatternRE):
        terminal.pattern = PatternRE(possessive(terminal.pattern.value), terminal.pattern.flags)


def get_parser(escape: str = "\\") -> Lark:
    """The compiled parser for one escape character (`\\` or a backtick), built on first use."""
    parser = _parsers.get(escape)
    if parser is not None:
        return parser
    with _lock:
        parser = _parsers.get(escape)
        if parser is None:
            text = _grammar_for_escape(escape)
            cached = _cache_file(text)
            parser = _load_cached(cached) if cached is not None else None
            if parser is None:
                parser = Lark(
                    text,
                    parser="lalr",
                    lexer="contextual",
                    propagate_positions=False,
                    maybe_placeholders=False,
                    edit_terminals=_possessive_terminal,
                    # Not Lark's own cache=True: it unpickles from the shared temp dir.
                )
                if cached is not None:
                    _save_cached(parser, cached)
            _parsers[escape] = parser
    return parser


def _cache_file(text: str) -> Path | None:
    if _cache_dir is None:
        return None
    import hashlib
    import sys

    import lark

    key = hashlib.sha256()
    for part in (text, Path(__file__).read_text(encoding="utf-8"), lark.__version__, sys.version):
        key.update(part.encode() + b"\0")
    return _cache_dir / f"parser-{key.hexdigest()[:32]}.lark"


def _load_cached(path: Path) -> Lark | None:
    import io

    from builder.parse.privatefile import read_private

    data = read_private(path)
    if data is None:
        return None
    try:
        return Lark.load(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - a damaged cache file is compiled again, never trusted
        return None


def _save_cached(parser: Lark, path: Path) -> None:
    from builder.parse.privatefile import write_private

    try:
        write_private(path, parser.save)
    except OSError:
        pass  # no cache this time: the next build compiles again
