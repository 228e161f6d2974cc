"""Checks on what a Python caller passes to `builder.build`, before any work.

Python will happily walk `tags="app:1"` character by character, or carry `build_args={"V": 9}`
until a string method fails deep in the planner; a caller gets `InvalidArgument` naming the
argument, what it got and what to write instead.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from builder.cancel import Cancellation
from builder.errors import InvalidArgument

_PATH_TYPES = (str, os.PathLike)
_CHOICES = {
    "compression": ("gzip", "zstd", "uncompressed"),
    "snapshotter": ("auto", "overlay", "copy"),
    "network": ("default", "host", "none"),
}


def check_build_arguments(**given: Any) -> None:
    for name in ("context",):
        _check_type(name, given[name], _PATH_TYPES, "a directory path")
    for name in ("file", "root"):
        if given[name] is not None:
            _check_type(name, given[name], _PATH_TYPES, "a path")
    for name in ("buildfile_text", "target", "platform"):
        if given[name] is not None:
            _check_type(name, given[name], (str,), "a string")
    for name in ("tags", "outputs", "no_cache_filter", "insecure_registries", "cache_to", "cache_from"):
        _check_strings(name, given[name])
    for name in ("build_args", "labels"):
        _check_mapping(name, given[name], (str,), "strings")
    _check_mapping("secrets", given["secrets"], _PATH_TYPES, "file paths")
    for name in ("no_cache", "reproducible", "pull"):
        _check_type(name, given[name], (bool,), "True or False")
    for name in ("compression_level", "source_date_epoch"):
        value = given[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidArgument(f"{name} must be an int or None, not {type(value).__name__} {value!r}")
    for name, choices in _CHOICES.items():
        if given[name] not in choices:
            raise InvalidArgument(f"{name}={given[name]!r} is not one of {', '.join(map(repr, choices))}")
    if given["on_event"] is not None and not callable(given["on_event"]):
        raise InvalidArgument(f"on_event must be callable (it gets each Event), not {type(given['on_event']).__name__}")
    if given["cancel"] is not None and not isinstance(given["cancel"], Cancellation):
        raise InvalidArgument(f"cancel must be a builder.Cancellation, not {type(given['cancel']).__name__}")


def _check_type(name: str, value: object, types: tuple[type, ...], wanted: str) -> None:
    if not isinstance(value, types):
        raise InvalidArgument(f"{name} must be {wanted}, not {type(value).__name__} {value!r}")


def _check_strings(name: str, value: object) -> None:
    if isinstance(value, (str, bytes)):
        raise InvalidArgument(f"{name} must be a list of strings, not one string {value!r}",
                              hint=f"write {name}=[{value!r}]")
    try:
        items = list(value)  # type: ignore[call-overload]  # anything iterable is fine; checked below
    except TypeError:
        raise InvalidArgument(f"{name} must be a list of strings, not {type(value).__name__} {value!r}") from None
    for item in items:
        if not isinstance(item, str):
            raise InvalidArgument(f"{name} must hold strings only, not {type(item).__name__} {item!r}")


def _check_mapping(name: str, value: object, types: tuple[type, ...], wanted: str) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{name} must be a mapping of names to {wanted}, not {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidArgument(f"{name} keys must be strings, not {type(key).__name__} {key!r}")
        if not isinstance(item, types):
            raise InvalidArgument(f"{name}[{key!r}] must be one of the {wanted}, not {type(item).__name__} {item!r}",
                                  hint=f"write {name}={{{key!r}: {str(item)!r}}}" if wanted == "strings" else None)
