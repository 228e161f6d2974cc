"""Reading the Buildfile and its ignore file: links inside the context still work, a Buildfile
outside the context is the user's own (tests/security/test_input_buildfile.py has the refusals)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder import api
from builder.context.dockerignore import IgnoreMatcher
from builder.context.inroot import relative_to_context, resolve_in_context
from builder.errors import BuildError, ContextError, ParseError


def test_link_inside_the_context_is_followed_there(tmp_path: Path):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "real.Buildfile").write_text("FROM scratch\nLABEL from=real\n")
    (tmp_path / "Buildfile").symlink_to("docker/real.Buildfile")
    path, text, _shown = api.read_buildfile(tmp_path, None, None)
    assert path == tmp_path / "Buildfile"
    assert "from=real" in text


def test_absolute_link_to_the_contexts_own_path_stays_inside(tmp_path: Path):
    (tmp_path / "real").write_text("FROM scratch\n")
    (tmp_path / "Buildfile").symlink_to(os.path.realpath(tmp_path / "real"))
    assert api.read_buildfile(tmp_path, None, None)[1] == "FROM scratch\n"


def test_errors_name_the_buildfile_as_the_user_does(tmp_path: Path, monkeypatch):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "real.Buildfile").write_text("FROM scratch\nBOGUS x\n")
    (tmp_path / "Buildfile").symlink_to("docker/real.Buildfile")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParseError) as caught:
        api.plan(".")
    assert str(caught.value.pos) == "Buildfile:2:1"


def test_dash_f_outside_the_context_is_read_as_given(tmp_path: Path):
    context = tmp_path / "ctx"
    context.mkdir()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "real").write_text("FROM scratch\nLABEL mine=yes\n")
    (mine / "Buildfile").symlink_to("real")  # the user's own link, outside the context
    (mine / "Buildfile.dockerignore").write_text("secret\n")
    path, text, _shown = api.read_buildfile(context, mine / "Buildfile", None)
    assert "mine=yes" in text
    assert IgnoreMatcher.load(context, path).patterns == ("secret",)


def test_relative_to_context_is_lexical(tmp_path: Path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "ci").symlink_to(tmp_path)
    assert relative_to_context(context, context / "ci" / "Buildfile") == "ci/Buildfile"
    assert relative_to_context(context, context / ".." / "x") is None
    assert relative_to_context(context, context) == "."


def test_resolve_in_context_missing_and_loops(tmp_path: Path):
    assert resolve_in_context(tmp_path, "nope/Buildfile", "Buildfile") is None
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(ContextError, match="too many levels"):
        resolve_in_context(tmp_path, "loop", "Buildfile")


def test_fifo_buildfile_is_refused_without_blocking(tmp_path: Path):
    os.mkfifo(tmp_path / "Buildfile")
    with pytest.raises(ContextError, match="not found|not a regular file"):
        api.plan(tmp_path)


def test_non_utf8_buildfile_error_has_a_position_and_no_bytes(tmp_path: Path):
    (tmp_path / "Buildfile").write_bytes(b"FROM scratch\nLABEL a=\xff\xfe\n")
    with pytest.raises(BuildError) as caught:
        api.plan(tmp_path)
    assert caught.value.pos is not None and caught.value.pos.line == 2 and caught.value.pos.column == 9
    assert "0xff" not in caught.value.render()


def test_ignore_file_size_limit(tmp_path: Path):
    from builder.context.dockerignore import MAX_IGNORE_FILE_BYTES

    (tmp_path / ".dockerignore").write_text("a\n" * (MAX_IGNORE_FILE_BYTES // 2))
    assert len(IgnoreMatcher.load(tmp_path, None).patterns) == MAX_IGNORE_FILE_BYTES // 2
    (tmp_path / ".dockerignore").write_text("a\n" * (MAX_IGNORE_FILE_BYTES // 2) + "b\n")
    with pytest.raises(ContextError, match="larger than 1048576 bytes"):
        IgnoreMatcher.load(tmp_path, None)
