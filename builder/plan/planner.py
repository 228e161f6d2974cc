"""Turn a parsed Buildfile into a DAG of stages: names, bases, dependencies, target pruning.

The plan is pure data: it can be printed (`build --print-plan`) and tested without building.
Variables inside a stage are expanded later, step by step, by the solver; here only what decides
the DAG is expanded: FROM lines (with the global ARGs) and `COPY --from` values.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from builder.errors import ExpansionError, PlanError, Pos
from builder.parse import ast
from builder.parse.expand import expand_word
from builder.plan.platforms import Platform, platform_args

SCRATCH = "scratch"
_EXPANDED_NAME_CHARS = frozenset("$\"'\\`")  # what expansion can change in an ARG name


@dataclass(frozen=True)
class Stage:
    """One FROM and the instructions after it, with the stages and images it reads."""

    index: int
    name: str | None  # lower-cased `AS name`
    from_instruction: ast.From
    base: str  # expanded FROM image, "scratch", or a stage name/index when base_stage is set
    base_stage: int | None  # index of the stage this one is built FROM, if any
    platform: Platform | None  # FROM --platform, expanded
    instructions: tuple[ast.Instruction, ...]  # the stage's instructions after FROM
    copy_from_stages: tuple[int, ...]  # stages read by COPY --from
    copy_from_images: tuple[str, ...]  # external images read by COPY --from

    @property
    def label(self) -> str:
        return self.name if self.name else f"stage-{self.index}"

    @property
    def depends_on(self) -> tuple[int, ...]:
        found = list(self.copy_from_stages)
        if self.base_stage is not None:
            found.insert(0, self.base_stage)
        return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class Plan:
    """The stages of a Buildfile, the one to build, and the order to build what it needs."""

    path: str
    stages: tuple[Stage, ...]
    target: int  # index of the stage whose result is the image
    order: tuple[int, ...]  # needed stages, dependencies first
    global_args: tuple[tuple[str, str | None], ...]  # ARGs before the first FROM, after --build-arg
    build_args: tuple[tuple[str, str], ...]
    build_platform: Platform
    target_platform: Platform
    unused_build_args: tuple[str, ...] = field(default=())

    def stage(self, index: int) -> Stage:
        return self.stages[index]


def _global_args(
    buildfile: ast.Buildfile, build_args: Mapping[str, str], auto_args: Mapping[str, str]
) -> list[tuple[str, str | None]]:
    """ARGs before the first FROM, with defaults expanded in order and --build-arg applied."""
    values: dict[str, str | None] = {}
    for instruction in buildfile.global_args:
        for name, raw_default in instruction.args:
            env = {**auto_args, **{k: v for k, v in values.items() if v is not None}}
            if name in build_args:
                values[name] = build_args[name]
            elif raw_default is not None:
                values[name] = expand_word(raw_default, env, pos=instruction.pos, escape=buildfile.escape)
            else:
                values[name] = None
    return list(values.items())


def _stage_lookup(stages: list[Stage], text: str) -> int | None:
    lowered = text.lower()
    for stage in stages:
        if stage.name == lowered:
            return stage.index
    return None


def make_plan(
    buildfile: ast.Buildfile,
    *,
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    target_platform: Platform | None = None,
) -> Plan:
    build_args = dict(build_args or {})
    build_platform = Platform.host()
    target_platform = target_platform or build_platform
    auto_args = platform_args(build_platform, target_platform)
    global_args = _global_args(buildfile, build_args, auto_args)
    from_env = {**auto_args, **{name: value for name, value in global_args if value is not None}}

    stages: list[Stage] = []
    pending: list[tuple[ast.From, list[ast.Instruction]]] = []
    seen_from = False
    for instruction in buildfile.instructions:
        if isinstance(instruction, ast.From):
            seen_from = True
            pending.append((instruction, []))
        elif seen_from:
            pending[-1][1].append(instruction)
        elif not isinstance(instruction, ast.Arg):
            raise PlanError(
                f"{instruction.keyword} before the first FROM",
                pos=instruction.pos,
                source_line=instruction.source.splitlines()[0] if instruction.source else None,
                hint="only ARG may come before FROM; start the Buildfile with FROM <image> or FROM scratch",
            )
    if not pending:
        raise PlanError(
            "the Buildfile has no FROM instruction",
            pos=Pos(buildfile.path, 1, 1),
            hint="start with FROM <image> or FROM scratch",
        )

    for index, (from_instruction, instructions) in enumerate(pending):
        base = _expand_or_fail(from_instruction.image, from_env, from_instruction, buildfile.escape)
        if not base:
            raise PlanError(
                "FROM names no image",
                pos=from_instruction.pos,
                source_line=_first_line(from_instruction),
                hint="the image expanded to an empty string; check the ARG it uses",
            )
        base_stage = _stage_lookup(stages, base)
        name = from_instruction.alias.lower() if from_instruction.alias else None
        if name is not None and base.lower() == name:
            raise PlanError(
                f"circular dependency: stage {name!r} is built FROM itself",
                pos=from_instruction.pos,
                source_line=_first_line(from_instruction),
                hint="name the base image or an earlier stage",
            )
        if name is not None:
            if _stage_lookup(stages, name) is not None:
                raise PlanError(
                    f"duplicate stage name {name!r}",
                    pos=from_instruction.pos,
                    source_line=_first_line(from_instruction),
                    hint="give every stage its own AS name",
                )
            if name == SCRATCH or name.isdigit():
                raise PlanError(
                    f"invalid stage name {name!r}",
                    pos=from_instruction.pos,
                    source_line=_first_line(from_instruction),
                    hint="a stage name cannot be 'scratch' or a number",
                )
        platform = None
        if from_instruction.platform is not None:
            platform_text = _expand_or_fail(from_instruction.platform, from_env, from_instruction, buildfile.escape)
            platform = Platform.parse(platform_text, from_instruction.pos)

        stages.append(
            Stage(
                index=index,
                name=name,
                from_instruction=from_instruction,
                base=base,
                base_stage=base_stage,
                platform=platform,
                instructions=tuple(instructions),
                copy_from_stages=(),
                copy_from_images=(),
            )
        )
    # COPY --from may name any stage, earlier or later (BuildKit resolves them after reading every
    # stage), so references are resolved once all names are known; cycles are caught below.
    stages = [_resolve_copy_sources(stage, stages, from_env, buildfile.escape) for stage in stages]

    target_index = len(stages) - 1
    if target is not None:
        found = _stage_lookup(stages, target)
        if found is None:
            names = ", ".join(stage.name for stage in stages if stage.name) or "none"
            raise PlanError(
                f"target stage {target!r} could not be found",
                hint=f"stage names in this Buildfile: {names}",
            )
        target_index = found

    order = _needed_in_order(stages, target_index)
    declared = {name for name, _ in global_args}
    for stage in stages:
        for instruction in stage.instructions:
            if isinstance(instruction, ast.Arg):
                declared.update(name for name, _ in instruction.args)
    # A stage ARG's name is expanded when the stage is built (`ARG ${NAME}`, `ARG "a"`): with
    # such a name the names are not known here, so no --build-arg is reported unused.
    dynamic = any(
        set(name) & _EXPANDED_NAME_CHARS
        for stage in stages for instruction in stage.instructions if isinstance(instruction, ast.Arg)
        for name, _ in instruction.args
    )
    unused = () if dynamic else tuple(
        sorted(name for name in build_args if name not in declared and not _is_predefined(name)))
    return Plan(
        path=buildfile.path,
        stages=tuple(stages),
        target=target_index,
        order=order,
        global_args=tuple(global_args),
        build_args=tuple(sorted(build_args.items())),
        build_platform=build_platform,
        target_platform=target_platform,
        unused_build_args=unused,
    )


def _is_predefined(name: str) -> bool:
    from builder.plan.platforms import PROXY_ARGS

    # SOURCE_DATE_EPOCH as a build arg sets the build's epoch (BuildKit 0.11+): consumed by the build.
    return name in PROXY_ARGS or name == "SOURCE_DATE_EPOCH"


def _resolve_copy_sources(stage: Stage, stages: list[Stage], env: Mapping[str, str], escape: str) -> Stage:
    copy_stages: list[int] = []
    copy_images: list[str] = []
    for instruction in stage.instructions:
        for source in _copy_from_values(instruction):
            value = _expand_or_fail(source, env, instruction, escape)
            referenced = _stage_lookup(stages, value)
            if referenced is None and value.isascii() and value.isdigit():  # int() refuses "²", and 5000 digits
                referenced = int(value) if len(value) <= 9 else len(stages)
                if referenced >= len(stages):
                    raise PlanError(
                        f"--from={value} refers to stage {value}, but the Buildfile has {len(stages)} stages",
                        pos=instruction.pos,
                        source_line=_first_line(instruction),
                        hint="stage indexes count FROM lines from 0",
                    )
            if referenced == stage.index:
                raise PlanError(
                    f"circular dependency: stage {stage.label!r} copies from itself",
                    pos=instruction.pos,
                    source_line=_first_line(instruction),
                    hint="copy from another stage or an image",
                )
            if referenced is not None:
                copy_stages.append(referenced)
            else:
                copy_images.append(value)
    return replace(stage, copy_from_stages=tuple(copy_stages), copy_from_images=tuple(dict.fromkeys(copy_images)))


def _copy_from_values(instruction: ast.Instruction) -> list[str]:
    found: list[str] = []
    if isinstance(instruction, ast.Copy) and instruction.from_ is not None:
        found.append(instruction.from_)
    if isinstance(instruction, ast.Run):
        for mount in instruction.mounts:
            source = mount.get("from")
            if source is not None:
                found.append(source)
    return found


def _needed_in_order(stages: list[Stage], target_index: int) -> tuple[int, ...]:
    """Depth-first over dependencies, so every stage comes after the stages it needs; COPY --from
    may point forwards, so cycles are possible and reported."""
    ordered: list[int] = []
    visiting: set[int] = set()

    def visit(index: int) -> None:
        if index in ordered:
            return
        if index in visiting:
            stage = stages[index]
            raise PlanError(
                f"circular dependency between stages, reached again at {stage.label!r}",
                pos=stage.from_instruction.pos,
                source_line=_first_line(stage.from_instruction),
                hint="COPY --from and FROM between these stages form a loop; break it",
            )
        visiting.add(index)
        for dependency in stages[index].depends_on:
            visit(dependency)
        visiting.discard(index)
        ordered.append(index)

    visit(target_index)
    return tuple(ordered)


def _first_line(instruction: ast.Instruction) -> str | None:
    return instruction.source.splitlines()[0] if instruction.source else None


def _expand_or_fail(raw: str, env: Mapping[str, str], instruction: ast.Instruction, escape: str) -> str:
    try:
        return expand_word(raw, env, pos=instruction.pos, escape=escape)
    except ExpansionError as error:
        if error.source_line is None:
            error.source_line = _first_line(instruction)
        raise
