"""Issue 10, item 8: a Buildfile (or its ignore file) in the context that is a symlink out of it
is refused, and nothing of the file it points to reaches the output.

Before, `Buildfile -> /etc/shadow` was followed by the host and its first line came back in
the syntax error. The "outside" file here stands for /etc/shadow: a file the build must not
read, holding a marker that must never appear in what the builder prints.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder import api
from builder.context.dockerignore import IgnoreMatcher
from builder.errors import ContextError

from ._input_helpers import assert_clean_failure, run_cli

SECRET = "TOPSECRET-d41d8cd9"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the context with files the build must never read."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "shadow").write_text(f"root:{SECRET}:20228:0:99999:7:::\n")
    (directory / "Buildfile").write_text(f"FROM scratch\nLABEL stolen={SECRET}\n")
    (directory / "ignore").write_text(f"[{SECRET}\n")  # an invalid pattern: its text would be echoed
    return directory


@pytest.fixture
def context(tmp_path: Path) -> Path:
    directory = tmp_path / "ctx"
    directory.mkdir()
    (directory / "file.txt").write_text("in the context\n")
    return directory


def _refused(done, *, name: str) -> None:
    stderr = assert_clean_failure(done, "leads out of the build context", name)
    assert SECRET not in stderr
    assert SECRET not in done.stdout.decode(errors="replace")


@pytest.mark.parametrize("name", ["Buildfile", "Dockerfile"])
def test_buildfile_link_to_a_host_file_is_refused(context: Path, outside: Path, name: str):
    (context / name).symlink_to(outside / "shadow")
    _refused(run_cli(["build", "--print-plan", "text", "."], cwd=context), name=name)
    with pytest.raises(ContextError) as caught:
        api.plan(context)
    assert SECRET not in caught.value.render()


def test_buildfile_link_to_a_valid_buildfile_outside_is_refused(context: Path, outside: Path):
    """Even a file that parses: its content would be built and shown in the plan."""
    (context / "Buildfile").symlink_to(outside / "Buildfile")
    _refused(run_cli(["build", "--print-plan", "text", "."], cwd=context), name="Buildfile")


def test_relative_link_climbing_out_is_refused(context: Path, outside: Path):
    (context / "Buildfile").symlink_to("../outside/shadow")
    _refused(run_cli(["build", "--print-plan", "text", "."], cwd=context), name="Buildfile")


def test_dash_f_inside_the_context_through_a_linked_directory_is_refused(context: Path, outside: Path):
    """`-f ctx/ci/Buildfile` names a path in the context; `ci -> outside` must not carry it out."""
    (context / "ci").symlink_to(outside)
    done = run_cli(["build", "--print-plan", "text", "-f", "ctx/ci/Buildfile", "ctx"], cwd=context.parent)
    _refused(done, name="ci")


def test_dash_f_naming_a_link_in_the_context_is_refused(context: Path, outside: Path):
    (context / "build.Buildfile").symlink_to(outside / "shadow")
    done = run_cli(["build", "--print-plan", "text", "-f", str(context / "build.Buildfile"), str(context)], cwd=outside)
    _refused(done, name="build.Buildfile")


def test_dockerignore_link_out_is_refused_without_its_content(context: Path, outside: Path, tmp_path: Path):
    (context / ".dockerignore").symlink_to(outside / "ignore")
    (context / "Buildfile").write_text("FROM scratch\nCOPY file.txt /file.txt\n")
    done = run_cli(["--root", str(tmp_path / "store"), "build", "."], cwd=context)
    _refused(done, name=".dockerignore")
    with pytest.raises(ContextError) as caught:
        IgnoreMatcher.load(context, context / "Buildfile")
    assert SECRET not in caught.value.render()


def test_buildfile_specific_ignore_link_out_is_refused(context: Path, outside: Path):
    (context / "Buildfile").write_text("FROM scratch\n")
    (context / "Buildfile.dockerignore").symlink_to(outside / "ignore")
    with pytest.raises(ContextError, match="leads out of the build context") as caught:
        IgnoreMatcher.load(context, context / "Buildfile")
    assert SECRET not in caught.value.render()


@pytest.mark.skipif(not os.path.exists("/etc/shadow"), reason="needs /etc/shadow")
def test_the_reported_case_buildfile_to_etc_shadow(context: Path):
    (context / "Buildfile").symlink_to("/etc/shadow")
    done = run_cli(["build", "--print-plan", "text", "."], cwd=context)
    stderr = assert_clean_failure(done, "leads out of the build context")
    assert "root:" not in stderr
