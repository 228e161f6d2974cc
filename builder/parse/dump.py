"""A plain, JSON-able, stable view of the AST, for snapshots and `--print-ast`."""
from __future__ import annotations

import dataclasses
from typing import Any

from builder.errors import Pos
from builder.parse import ast


def _value(value: Any) -> Any:
    if isinstance(value, Pos):
        return f"{value.line}:{value.column}"  # the file is given once, at the top
    if isinstance(value, ast.ShellCommand):
        return {"shell": value.text}
    if isinstance(value, ast.ExecCommand):
        return {"exec": list(value.argv)}
    if isinstance(value, ast.Instruction):
        return instruction_to_data(value)
    if dataclasses.is_dataclass(value):
        return {field.name: _value(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_value(item) for item in value]
    return value


def instruction_to_data(instruction: ast.Instruction) -> dict[str, Any]:
    """One instruction: its keyword first, then every field in declaration order."""
    data: dict[str, Any] = {"keyword": instruction.keyword}
    for field in dataclasses.fields(instruction):
        data[field.name] = _value(getattr(instruction, field.name))
    return data


def ast_to_data(buildfile: ast.Buildfile) -> dict[str, Any]:
    """The whole file as dicts, lists, strings, numbers, booleans and None."""
    return {
        "path": buildfile.path,
        "escape": buildfile.escape,
        "directives": [[name, value] for name, value in buildfile.directives],
        "instructions": [instruction_to_data(item) for item in buildfile.instructions],
    }
