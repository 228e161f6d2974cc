"""The `key=value,key=value` specs of --output, --cache-to and --cache-from, read as buildx reads
them (CSV, so a value may be quoted and hold commas); one reader so the options agree."""
from __future__ import annotations

import csv
from typing import Callable

from builder.errors import BuildError


def parse_spec_fields(text: str, shown: str, error: Callable[..., BuildError],
                      *, repeatable: frozenset[str] = frozenset()) -> dict[str, str]:
    """Keys lower-cased; a key given twice is an error unless `repeatable` (values then joined by
    commas, as buildx joins them). `shown` names the spec in messages ("output 'type=oci'")."""
    try:
        fields = next(csv.reader([text]))
    except csv.Error as exc:
        raise error(f"cannot parse {shown}: {exc}") from None
    attrs: dict[str, str] = {}
    for item in fields:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise error(f"invalid field {item!r} in {shown}", hint="fields are key=value, comma separated")
        if key in attrs and key not in repeatable:
            raise error(f"{key} given twice in {shown}")
        attrs[key] = f"{attrs[key]},{value}" if key in attrs else value
    return attrs


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def parse_spec_bool(value: str, key: str, shown: str, error: Callable[..., BuildError]) -> bool:
    """A boolean field of such a spec, as buildx takes them (true/false, 1/0, yes/no, on/off)."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise error(f"invalid value {value!r} for {key} in {shown}", hint=f"use {key}=true or {key}=false")
