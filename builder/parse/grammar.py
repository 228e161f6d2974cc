"""Load grammar/buildfile.lark once per escape character and keep the compiled LALR parser.

The grammar ships inside the wheel as package data of `builder.grammar` (pyproject maps the
top-level grammar/ dir there); from a source tree it is read from <repo>/grammar/.
Compiling is deferred to the first parse so `import builder` stays fast, and done once per
process and escape character.
"""
from __future__ import annotations

import re
import threading
from importlib import resources
from pathlib import Path

from lark import Lark

GRAMMAR_FILE = "buildfile.lark"

# The two definitions the backtick escape mode swaps (see the grammar's comment on _ESC).
_ESC_DEFINITION = re.compile(r'^_ESC: "\\\\"$', re.MULTILINE)
_OTHER_ESC_DEFINITION = re.compile(r'^_OTHER_ESC: "`"$', re.MULTILINE)

_parsers: dict[str, Lark] = {}
_lock = threading.Lock()


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


def get_parser(escape: str = "\\") -> Lark:
    """The compiled parser for one escape character (`\\` or a backtick), built on first use."""
    parser = _parsers.get(escape)
    if parser is not None:
        return parser
    with _lock:
        parser = _parsers.get(escape)
        if parser is None:
            parser = Lark(
                _grammar_for_escape(escape),
                parser="lalr",
                lexer="contextual",
                propagate_positions=False,
                maybe_placeholders=False,
                # No cache=True: Lark would unpickle a file from the shared temp dir, which another
                # local user could plant; compiling takes ~0.1 s once per process and escape mode.
            )
            _parsers[escape] = parser
    return parser
