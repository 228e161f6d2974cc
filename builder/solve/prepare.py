"""Turn each instruction into its prepared step: the one place that knows instruction types.

Metadata instructions and ARG are prepared here; RUN in runstep.py, COPY and ADD in copystep.py,
WORKDIR (a config change that also makes its directory) in workdirstep.py.
"""
from __future__ import annotations

from typing import Callable

from builder.errors import PlanError
from builder.parse import ast
from builder.plan.platforms import platform_args
from builder.solve import metadata
from builder.solve.copystep import CopyStep
from builder.solve.runstep import RunStep
from builder.solve.state import ImageState
from builder.solve.step import PreparedStep, StepInput
from builder.solve.workdirstep import WorkdirStep


class MetadataStep(PreparedStep):
    """ENV, LABEL, CMD, ...: a config change, no layer. The change is in the key, so a cached
    step and a fresh one change the config alike; the cache only keeps the history entry."""

    def __init__(self, step: StepInput) -> None:
        self.created_by, self.change = metadata.describe(step.instruction, step.state, step.expand)
        self.components = {"instruction": self.created_by, "change": self.change.to_json()}

    def apply(self, state: ImageState) -> None:
        self.change.apply(state)


class ArgStep(PreparedStep):
    """ARG: brings variables into scope. The value stays out of the key on purpose: Docker
    invalidates at the first *use* of an ARG (an expanded instruction, a RUN's environment).

    As BuildKit does for an ARG inside a stage, the name is expanded too (`ARG ${NAME}=v`), with
    the variables in scope before the instruction, and so is the default, but only when it is
    the value used (a --build-arg wins, and its default is then never evaluated)."""

    def __init__(self, step: StepInput) -> None:
        instruction = step.instruction
        assert isinstance(instruction, ast.Arg)
        session, stage = step.session, step.stage
        plan = session.plan
        build_args = session.options.build_args
        global_values = dict(plan.global_args)
        automatic = platform_args(plan.build_platform, stage.platform or plan.target_platform)
        self.values: dict[str, str] = {}
        shown: list[str] = []
        for raw_name, raw_default in instruction.args:
            name = step.expand(raw_name)
            if not name:
                raise PlanError(
                    f"the ARG name {raw_name!r} expands to an empty string", pos=instruction.pos,
                    source_line=step.source_line, hint="an ARG needs a name; check the variable it is made of",
                )
            value: str | None
            if name in build_args:
                value = build_args[name]
            elif raw_default is not None:
                value = step.expand(raw_default)
            elif name in automatic:
                value = automatic[name]
            else:
                value = global_values.get(name)
            if value is not None:
                self.values[name] = value
            # BuildKit's history shows a default as the value in effect, and a bare ARG bare.
            shown.append(name if raw_default is None or value is None else f"{name}={value}")
        self.created_by = "ARG " + " ".join(shown)
        # The instruction as written: values reach the key where they are used, not here.
        self.components = {"instruction": "ARG " + " ".join(
            name if default is None else f"{name}={default}" for name, default in instruction.args)}

    def apply(self, state: ImageState) -> None:
        state.args.update(self.values)


_PREPARERS: dict[type, Callable[[StepInput], PreparedStep]] = {
    ast.Run: RunStep,
    ast.Copy: CopyStep,
    ast.Add: CopyStep,
    ast.Arg: ArgStep,
    **{kind: MetadataStep for kind in metadata.DESCRIBERS},
    ast.Workdir: WorkdirStep,  # a config change and a directory
}


def prepare_step(step: StepInput) -> PreparedStep:
    """The prepared step for `step.instruction` against `step.state` (expanded, checked)."""
    preparer = _PREPARERS.get(type(step.instruction))
    if preparer is None:
        raise PlanError(f"{step.instruction.keyword} cannot appear here", pos=step.instruction.pos,
                        source_line=step.source_line, hint="FROM starts a stage; it is not a step")
    return preparer(step)
