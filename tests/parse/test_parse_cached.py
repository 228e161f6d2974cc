"""The store's parsed-Buildfile cache (builder.parse.cached): hits give the same AST, anything
odd in the cache is parsed again, never trusted."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from builder.errors import ParseError
from builder.parse import cached, parse_buildfile

TEXT = "FROM busybox AS base\nARG V=1\nRUN --mount=type=cache,target=/c echo $V\nCOPY --chown=1:2 a b /dst/\n"


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("ast-*"))


def _no_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(text: str, path: str) -> None:
        raise AssertionError("the parser ran on a cache hit")

    monkeypatch.setattr(cached, "_parse", lambda text, path, cache_dir: refuse(text, path))


def test_a_second_parse_of_the_same_text_comes_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = cached.parse_cached(TEXT, "Buildfile", tmp_path)
    assert first == parse_buildfile(TEXT, path="Buildfile")
    assert len(_entries(tmp_path)) == 1
    _no_parser(monkeypatch)
    assert cached.parse_cached(TEXT, "Buildfile", tmp_path) == first


def test_the_text_and_the_shown_path_are_both_in_the_key(tmp_path: Path) -> None:
    cached.parse_cached(TEXT, "Buildfile", tmp_path)
    other_path = cached.parse_cached(TEXT, "sub/Buildfile", tmp_path)
    assert other_path.instructions[0].pos.file == "sub/Buildfile"
    cached.parse_cached(TEXT + "ENV A=1\n", "Buildfile", tmp_path)
    assert len(_entries(tmp_path)) == 3


def test_a_failed_parse_raises_and_keeps_nothing(tmp_path: Path) -> None:
    with pytest.raises(ParseError) as raised:
        cached.parse_cached("FROM busybox\nFROB x\n", "Buildfile", tmp_path)
    assert raised.value.pos is not None and raised.value.pos.line == 2
    assert _entries(tmp_path) == []


def test_a_damaged_entry_is_parsed_again(tmp_path: Path) -> None:
    cached.parse_cached(TEXT, "Buildfile", tmp_path)
    [entry] = _entries(tmp_path)
    entry.write_bytes(b"\x80\x05not a pickle")
    assert cached.parse_cached(TEXT, "Buildfile", tmp_path) == parse_buildfile(TEXT, path="Buildfile")


def test_an_entry_naming_anything_but_ast_nodes_is_never_loaded(tmp_path: Path) -> None:
    cached.parse_cached(TEXT, "Buildfile", tmp_path)
    [entry] = _entries(tmp_path)
    marker = tmp_path / "ran"
    planted = pickle.dumps(_PlantedCall(str(marker)), protocol=5)
    entry.write_bytes(planted)
    assert cached.parse_cached(TEXT, "Buildfile", tmp_path) == parse_buildfile(TEXT, path="Buildfile")
    assert not marker.exists()


class _PlantedCall:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # what a planted pickle would run when loaded
        return (os.mkdir, (self.path,))


def test_an_entry_of_another_shown_path_is_not_taken(tmp_path: Path) -> None:
    cached.parse_cached(TEXT, "Buildfile", tmp_path)
    [entry] = _entries(tmp_path)
    other = parse_buildfile(TEXT, path="elsewhere")
    entry.write_bytes(pickle.dumps(other, protocol=5))
    assert cached.parse_cached(TEXT, "Buildfile", tmp_path).path == "Buildfile"


def test_a_link_in_place_of_an_entry_is_not_followed(tmp_path: Path) -> None:
    cached.parse_cached(TEXT, "Buildfile", tmp_path)
    [entry] = _entries(tmp_path)
    elsewhere = tmp_path / "elsewhere.pickle"
    elsewhere.write_bytes(entry.read_bytes())
    entry.unlink()
    entry.symlink_to(elsewhere)
    assert cached._load(entry, "Buildfile") is None


def test_the_cache_keeps_at_most_its_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cached, "MAX_ENTRIES", 3)
    for number in range(6):
        cached.parse_cached(f"FROM scratch\nENV N={number}\n", "Buildfile", tmp_path)
    assert len(_entries(tmp_path)) == 3


def test_the_key_follows_the_parser_code_and_the_grammar(monkeypatch: pytest.MonkeyPatch) -> None:
    fingerprint = cached.code_fingerprint()
    parse_dir = Path(cached.__file__).resolve().parent
    assert f"{parse_dir / 'parser.py'}:" in fingerprint
    assert "buildfile.lark:" in fingerprint  # the grammar, wherever this install keeps it
    before = cached._key(TEXT, "Buildfile")
    # An edited parser.py (another size or mtime) is another fingerprint, so another key.
    monkeypatch.setattr(cached, "_fingerprint", fingerprint.replace(f"{parse_dir / 'parser.py'}:", "parser.py:x"))
    assert cached._key(TEXT, "Buildfile") != before
