"""The planner: stages, dependencies, target pruning, and the printed plan of every testdata file."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import BuildError, PlanError
from builder.parse import parse_buildfile
from builder.plan.planner import make_plan
from builder.plan.platforms import Platform
from builder.plan.render import render_dot, render_text

TESTDATA = Path(__file__).resolve().parents[2] / "testdata" / "buildfiles" / "ok"
OK_FILES = sorted(TESTDATA.glob("*.Buildfile"))
AMD64 = Platform("linux", "amd64")


def _plan(text: str, **kwargs):
    return make_plan(parse_buildfile(text, path="Buildfile"), target_platform=AMD64, **kwargs)


def test_there_are_testdata_files() -> None:
    assert len(OK_FILES) >= 60


@pytest.mark.parametrize("path", OK_FILES, ids=lambda path: path.stem)
def test_printed_plan_of_every_testdata_file(path: Path, snapshot, monkeypatch) -> None:
    # The build platform is the host's; pin it so snapshots do not depend on the machine.
    monkeypatch.setattr(Platform, "host", classmethod(lambda cls: AMD64))
    buildfile = parse_buildfile(path.read_text(), path=path.name)
    try:
        printed = render_text(make_plan(buildfile, target_platform=AMD64))
    except BuildError as error:
        printed = "error: " + error.render()
    assert printed == snapshot


def test_target_keeps_only_the_stages_it_needs() -> None:
    plan = _plan(
        "FROM scratch AS base\nFROM scratch AS tools\nFROM base AS app\nCOPY --from=tools /x /x\nFROM scratch AS unrelated\n",
        target="app",
    )
    assert [plan.stages[index].label for index in plan.order] == ["base", "tools", "app"]
    assert plan.target == 2
    assert plan.stages[2].base_stage == 0
    assert plan.stages[2].copy_from_stages == (1,)


def test_copy_from_index_and_image_and_forward_reference() -> None:
    plan = _plan(
        "FROM scratch\nCOPY --from=later /a /a\nCOPY --from=busybox:1.36 /bin/sh /sh\n"
        "FROM scratch AS later\nFROM scratch\nCOPY --from=0 /b /b\n",
        target=None,
    )
    assert plan.stages[0].copy_from_stages == (1,)
    assert plan.stages[0].copy_from_images == ("busybox:1.36",)
    assert plan.stages[2].copy_from_stages == (0,)
    assert plan.order == (1, 0, 2)


def test_cycles_are_errors_with_a_position() -> None:
    with pytest.raises(PlanError, match="circular dependency") as caught:
        _plan("FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /y /y\n")
    assert caught.value.pos is not None
    with pytest.raises(PlanError, match="copies from itself"):
        _plan("FROM scratch AS a\nCOPY --from=a /x /x\n")
    with pytest.raises(PlanError, match="FROM itself"):
        _plan("FROM a AS a\n")


def test_unknown_target_and_bad_stage_names() -> None:
    with pytest.raises(PlanError, match="target stage 'nope' could not be found"):
        _plan("FROM scratch AS one\n", target="nope")
    with pytest.raises(PlanError, match="duplicate stage name 'x'") as caught:
        _plan("FROM scratch AS x\nFROM scratch AS x\n")
    assert caught.value.pos.line == 2
    with pytest.raises(PlanError, match="no FROM"):
        _plan("ARG ONLY=1\n")
    with pytest.raises(PlanError, match="ENV before the first FROM") as caught:
        _plan("ENV A=1\nFROM scratch\n")
    assert caught.value.pos.line == 1


def test_global_args_expand_in_from_and_build_args_override() -> None:
    text = "ARG BASE=busybox\nARG TAG=${BASE}-1\nFROM ${BASE}:${TAG} AS one\nFROM $TARGETARCH-image\n"
    plan = _plan(text, build_args={"BASE": "alpine", "UNUSED": "1"})
    assert plan.stages[0].base == "alpine:alpine-1"
    assert plan.stages[1].base == "amd64-image"
    assert plan.unused_build_args == ("UNUSED",)


def test_build_args_are_not_called_unused_when_a_stage_arg_name_is_expanded() -> None:
    # `ARG ${NAME}` declares whatever NAME holds when the stage is built.
    assert _plan("FROM scratch\nARG NAME=x\nARG ${NAME}\n", build_args={"x": "1"}).unused_build_args == ()
    assert _plan("ARG ${G}\nFROM scratch\nARG a\n", build_args={"x": "1"}).unused_build_args == ("x",)


def test_dot_output_draws_every_edge() -> None:
    plan = _plan("FROM busybox AS a\nFROM a AS b\nCOPY --from=a /x /x\nFROM scratch AS c\nCOPY --from=b /y /y\n")
    dot = render_dot(plan)
    assert dot.startswith("digraph plan {")
    assert 's0 -> s1 [label="FROM"];' in dot
    assert 's1 -> s2 [label="COPY --from", style=dotted];' in dot
    assert '"busybox"' in dot
