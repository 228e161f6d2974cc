"""Buildfile parsing: text -> `builder.parse.ast.Buildfile` (see grammar/buildfile.lark).

`parse_buildfile` is the entry point; `builder.parse.expand` does Docker's variable expansion
on the raw words the AST keeps; `builder.parse.dump.ast_to_data` gives a JSON-able view.
"""
from __future__ import annotations

from builder.parse.parser import parse_buildfile

__all__ = ["parse_buildfile"]
