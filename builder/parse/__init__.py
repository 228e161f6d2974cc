"""Buildfile parsing: text -> `builder.parse.ast.Buildfile` (see grammar/buildfile.lark).

`parse_buildfile` is the entry point; `builder.parse.expand` does Docker's variable expansion
on the raw words the AST keeps; `builder.parse.dump.ast_to_data` gives a JSON-able view;
`builder.parse.cached.parse_cached` keeps parsed Buildfiles in the store.

`parse_buildfile` loads the parser (and Lark) on first use: a build whose Buildfile was parsed
before takes its AST from the store and never loads them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from builder.parse.parser import parse_buildfile

__all__ = ["parse_buildfile"]


def __getattr__(name: str) -> Any:
    if name != "parse_buildfile":
        raise AttributeError(f"module 'builder.parse' has no attribute {name!r}")
    from builder.parse.parser import parse_buildfile

    globals()[name] = parse_buildfile
    return parse_buildfile
