"""The part of Go's text/template that scripts pass to `docker ... --format`.

Supported: literal text, `{{.}}`, field paths `{{.Config.Env}}`, `{{json .X}}`,
`{{index .Map "key"}}` (keys may be strings or integers, several in a row), `{{len .X}}`,
`{{upper .X}}`/`{{lower .X}}`, and `\\n`/`\\t` escapes as the docker CLI expands them in a format.
Values print as Go's fmt does for what docker decodes from JSON: maps as `map[k:v]` (keys
sorted), lists as `[a b]`, null as `<nil>`, a missing key as `<no value>`. Anything else
(range, if, pipes, variables) is refused with a clear error, never guessed at.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Callable

from builder.errors import BuildError

MISSING = object()
_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
_FIELD_PATH = re.compile(r"^\.(?:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)?$")


class TemplateError(BuildError):
    """A --format template we cannot read."""


@dataclass(frozen=True)
class Template:
    parts: tuple[str | tuple[str, ...], ...]  # literal text, or the words of one action

    def top_fields(self) -> list[str]:
        """The first names of the field paths the template reads (`.Repository` -> Repository)."""
        names = []
        for part in self.parts:
            if isinstance(part, tuple):
                for word in part:
                    name = word[1:].split(".")[0] if word.startswith(".") else ""
                    if name and name not in names:
                        names.append(name)
        return names

    def render(self, data: object) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(_show(_evaluate(part, data)))
        return "".join(out)


def parse_template(text: str) -> Template:
    text = text.replace("\\n", "\n").replace("\\t", "\t")
    parts: list[str | tuple[str, ...]] = []
    position = 0
    for match in _ACTION.finditer(text):
        if match.start() > position:
            parts.append(text[position:match.start()])
        parts.append(_words(match.group(1), text))
        position = match.end()
    rest = text[position:]
    if "{{" in rest:
        raise TemplateError(f"--format {text!r}: an action opened with {{{{ is never closed",
                            hint="write actions as {{.Field}}")
    if rest:
        parts.append(rest)
    return Template(tuple(parts))


def _words(action: str, text: str) -> tuple[str, ...]:
    try:
        words = tuple(shlex.split(action, posix=False))
    except ValueError as exc:
        raise TemplateError(f"--format {text!r}: cannot read {{{{{action}}}}}: {exc}") from None
    if not words:
        raise TemplateError(f"--format {text!r}: empty action {{{{}}}}")
    head = words[0]
    if head in _FUNCTIONS:
        arity = _FUNCTIONS[head][0]
        wrong_count = len(words) != arity + 1 if arity >= 0 else len(words) < 3
        if wrong_count:
            wanted = f"{arity} argument(s)" if arity >= 0 else "a value and one or more keys"
            raise TemplateError(f"--format {text!r}: {head} takes {wanted} in {{{{{action}}}}}")
        for word in words[1:2]:
            _check_path(word, text)
        return words
    if len(words) == 1:
        _check_path(head, text)
        return words
    raise TemplateError(f"--format {text!r}: {{{{{action}}}}} is not supported",
                        hint="supported: {{.Field.Sub}}, {{json .X}}, {{index .Map \"key\"}}, {{len .X}}")


def _check_path(word: str, text: str) -> None:
    if not _FIELD_PATH.match(word):
        raise TemplateError(f"--format {text!r}: {word!r} is not a field path",
                            hint="fields are written .Name or .Name.Sub")


def _lookup(path: str, data: object) -> object:
    value = data
    for name in path.split(".")[1:]:
        if not name:
            continue
        if isinstance(value, dict):
            value = value.get(name, MISSING)
        else:
            raise TemplateError(f"--format: cannot take .{name} of {_show(value)!r}")
        if value is MISSING:
            return MISSING
    return value


def _index(value: object, *keys: str) -> object:
    for key in keys:
        if isinstance(value, dict):
            literal = _literal(key)
            value = value.get(str(literal), MISSING)
        elif isinstance(value, list):
            literal = _literal(key)
            if not isinstance(literal, int) or not 0 <= literal < len(value):
                raise TemplateError(f"--format: index {key} out of range for a list of {len(value)}")
            value = value[literal]
        else:
            raise TemplateError(f"--format: cannot index {_show(value)!r}")
        if value is MISSING:
            return MISSING
    return value


def _literal(word: str) -> str | int:
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "\"`":
        return word[1:-1]
    try:
        return int(word)
    except ValueError:
        raise TemplateError(f"--format: {word!r} is not a key (quote strings: \"key\")") from None


def _length(value: object) -> object:
    if isinstance(value, (dict, list, str)):
        return len(value)
    raise TemplateError(f"--format: len of {_show(value)!r}")


def _as_text(function: Callable[[str], str]) -> Callable[[object], object]:
    return lambda value: function(value) if isinstance(value, str) else function(_show(value))


_FUNCTIONS: dict[str, tuple[int, Callable[..., object]]] = {
    # name: (number of arguments, -1 for "one or more after the first"; the function)
    "json": (1, lambda value: _Json(value)),
    "index": (-1, _index),
    "len": (1, _length),
    "upper": (1, _as_text(str.upper)),
    "lower": (1, _as_text(str.lower)),
}


@dataclass(frozen=True)
class _Json:
    value: object


def _evaluate(words: tuple[str, ...], data: object) -> object:
    head = words[0]
    if head not in _FUNCTIONS:
        return _lookup(head, data)
    subject = _lookup(words[1], data)
    function = _FUNCTIONS[head][1]
    if head == "index":
        return function(subject, *words[2:])
    if subject is MISSING and head != "json":
        return MISSING
    return function(None if subject is MISSING else subject)


def _show(value: object) -> str:
    if isinstance(value, _Json):
        return json.dumps(value.value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    if value is MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return "map[" + " ".join(f"{key}:{_show(value[key])}" for key in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_show(item) for item in value) + "]"
    return str(value)
