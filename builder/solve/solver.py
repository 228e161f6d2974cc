"""The scheduler: walk the plan, stages in parallel where they do not depend on each other, each
step prepared, keyed, then taken from the cache or executed. It knows no instruction types:
`prepare.prepare_step` turns an instruction into a `PreparedStep`, which carries its key's
components, its execution and its config change.

A cache entry holds what the step added (its layer, its history entry) and the chain id after
it, never the whole image state, so the index grows linearly with the number of steps.
"""
from __future__ import annotations

import contextlib
import functools
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.cache.steplog import LoggedStep
from builder.errors import BuildCancelled, BuildError
from builder.image.store import Store
from builder.parse import ast
from builder.parse.expand import expand_word
from builder.plan.planner import SCRATCH, Plan, Stage
from builder.plan.platforms import PROXY_ARGS
from builder.plan.render import summary
from builder.progress import Event, EventKind, error_message
from builder.solve import cache as cache_keys
from builder.solve.executor import Executor, SandboxExecutor
from builder.solve.options import BuildOptions, StepResult
from builder.solve.prepare import prepare_step
from builder.solve.session import BuildSession
from builder.solve.sources import image_layers
from builder.solve.stagepool import Run, StagePool
from builder.solve.state import ImageState, LayerRef
from builder.solve.step import PreparedStep, StepInput


class _CacheWrites:
    """One stage's cache writes and touches, sent to the index in one transaction each: a run
    of config-only steps costs one fsync, not one per step."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.puts: list[tuple[str, dict[str, Any]]] = []
        self.touched: list[str] = []

    def flush(self) -> None:
        puts, touched, self.puts, self.touched = self.puts, self.touched, [], []
        self.store.cache_put_many(puts)
        self.store.cache_touch(touched)


@dataclass(frozen=True)
class CachedStep:
    """A step's cache entry: what it added to the image and the chain id after it."""

    chain: str
    layer: LayerRef | None
    history: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"chain": self.chain, "layer": self.layer.to_json() if self.layer else None, "history": self.history}

    @classmethod
    def from_json(cls, data: Any) -> "CachedStep | None":
        """None for an entry this version does not understand (an older format): a miss."""
        try:
            layer = data["layer"]
            return cls(str(data["chain"]), None if layer is None else LayerRef.from_json(layer), dict(data["history"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class StepNumber:
    """Where a step stands: its number in the build, its position in its stage (0: a trigger)."""

    number: int
    stage_step: int
    stage_steps: int


def step_count(plan: Plan) -> int:
    """The steps the Buildfile gives this build (FROM counts): what the progress total starts at."""
    return sum(1 + len(plan.stages[index].instructions) for index in plan.order)


def first_step_numbers(plan: Plan) -> dict[int, int]:
    """Stage index -> the number of its FROM step, in the plan's order of stages and
    instructions: fixed before anything runs, so every run of a Buildfile numbers alike."""
    numbers: dict[int, int] = {}
    following = 1
    for index in plan.order:
        numbers[index] = following
        following += 1 + len(plan.stages[index].instructions)
    return numbers


class Solver:
    def __init__(self, store: Store, plan: Plan, options: BuildOptions, escape: str = "\\",
                 executor: Executor | None = None) -> None:
        self.store = store
        self.plan = plan
        self.options = options
        self.escape = escape
        self.executor = executor or SandboxExecutor(options.snapshotter)
        self.cache_log: list[LoggedStep] = []  # every step as it ended, for --cache-to (after solve())

    def solve(self) -> tuple[ImageState, list[StepResult]]:
        total = step_count(self.plan)
        with self.store.tempdir("b") as work_dir, contextlib.ExitStack() as held_images:
            session = BuildSession(self.store, self.plan, self.options, Path(work_dir), self.executor, total,
                                   held_images=held_images, first_numbers=first_step_numbers(self.plan))
            runs: dict[int, Run[ImageState]] = {}
            pool: StagePool[ImageState] = StagePool(workers=min(4, len(self.plan.order)))
            cancel = self.options.cancel
            forget_cancel = cancel.on_cancel(lambda: self._stop(session)) if cancel is not None else None
            try:
                for index in self.plan.order:
                    stage = self.plan.stages[index]
                    dependencies = [runs[dep] for dep in stage.depends_on]
                    runs[index] = pool.submit(functools.partial(self._run_stage, session, stage, dependencies))
                # The first failure anywhere stops the rest at once, not when the target reaches it.
                failed = pool.wait_all_or_first_failure()
                if failed is not None:
                    failed.result()
                final = runs[self.plan.target].result()
            except BaseException:
                # A failed stage or Ctrl-C: stop this build's other stages instead of waiting.
                self._stop(session)
                if cancel is not None and cancel.cancelled:
                    raise BuildCancelled("build cancelled", hint="Cancellation.cancel() was called") from None
                raise
            finally:
                if forget_cancel is not None:
                    forget_cancel()
                pool.shutdown()
            if cancel is not None and cancel.cancelled:
                raise BuildCancelled("build cancelled", hint="Cancellation.cancel() was called")
            session.results.sort(key=lambda result: result.number)
            self.cache_log = list(session.cache_log)
            return final, session.results

    def _stop(self, session: BuildSession) -> None:
        session.cancelled.set()
        self.executor.stop_all()

    # --- one stage ---------------------------------------------------------------------------
    def _run_stage(self, session: BuildSession, stage: Stage, dependencies: list[Run[ImageState]]) -> ImageState:
        for dependency in dependencies:
            dependency.result()  # re-raises a dependency's failure
        number = session.first_numbers[stage.index]
        stage_steps = 1 + len(stage.instructions)
        from_text = summary(stage.from_instruction)
        session.emit(Event(EventKind.STEP_START, stage.label, number, session.steps_total, from_text,
                           stage_step=1, stage_steps=stage_steps))
        started = time.monotonic()
        try:
            state = self._base_state(session, stage, number)
        except BaseException as error:
            self._emit_error(session, stage, StepNumber(number, 1, stage_steps), error, started)
            raise
        seconds = time.monotonic() - started
        session.emit(Event(EventKind.STEP_DONE, stage.label, number, session.steps_total, from_text, seconds,
                           stage_step=1, stage_steps=stage_steps))
        with session.lock:
            session.results.append(
                StepResult(stage.label, number, from_text, False, state.chain, seconds, None, "base image")
            )
        # ONBUILD triggers are known only once the base is: numbered after all the Buildfile's steps.
        steps = [(trigger, session.next_step_number(), 0) for trigger in self._onbuild_triggers(state, stage)]
        steps += [(instruction, number + position, position + 1)
                  for position, instruction in enumerate(stage.instructions, start=1)]
        writes = _CacheWrites(self.store)
        try:
            for step_index, (instruction, step_number, stage_step) in enumerate(steps, start=1):
                if session.cancelled.is_set():
                    raise BuildError("build cancelled", hint="another stage failed or the build was interrupted")
                self._run_step(session, stage, state, instruction, step_index, writes,
                               StepNumber(step_number, stage_step, stage_steps))
        finally:
            writes.flush()  # what succeeded before a failure is kept for the next build
        with session.lock:
            session.stage_states[stage.index] = state
        return state

    def _emit_error(self, session: BuildSession, stage: Stage, position: StepNumber, error: BaseException,
                    started: float) -> None:
        # Stopped because another stage failed (or Ctrl-C): not this step's own error.
        message = "cancelled" if session.cancelled.is_set() else error_message(error)
        session.emit(Event(EventKind.STEP_ERROR, stage.label, position.number, session.steps_total, message,
                           time.monotonic() - started, stage_step=position.stage_step,
                           stage_steps=position.stage_steps))

    def _onbuild_triggers(self, state: ImageState, stage: Stage) -> list[ast.Instruction]:
        """ONBUILD triggers of the base run right after FROM, then are cleared from the config."""
        from builder.parse.cached import parse_cached

        triggers = state.config.pop("OnBuild", None) or []
        found: list[ast.Instruction] = []
        for text in triggers:
            parsed = parse_cached(f"FROM scratch\n{text}\n", f"{stage.base} (ONBUILD)", self.store.parser_cache_dir)
            found.extend(parsed.instructions[1:])
        return found

    def _base_state(self, session: BuildSession, stage: Stage, number: int) -> ImageState:
        target = stage.platform or self.plan.target_platform
        if stage.base_stage is not None:
            with session.lock:
                parent = session.stage_states[stage.base_stage]
            state = parent.for_new_stage()
            state.chain = cache_keys.step_key(parent.chain, {"instruction": "FROM stage"})
            return state
        state = ImageState(os=target.os, architecture=target.architecture, variant=target.variant)
        if stage.base.lower() == SCRATCH:
            # BuildKit's empty image has WorkingDir "/" (and, below, the default PATH).
            state.config = {"WorkingDir": "/"}
            state.chain = cache_keys.step_key("scratch", {"platform": str(target)})
        else:
            record = session.sources.load_or_pull(
                stage.base, target, pos=stage.from_instruction.pos, source_line=summary(stage.from_instruction),
                what="FROM", step=number)
            config = record.config
            state.config = dict(config.get("config") or {})
            state.history = list(config.get("history") or [])
            state.author = config.get("author", "")
            state.os = config.get("os", state.os)
            state.architecture = config.get("architecture", state.architecture)
            state.variant = config.get("variant", "")
            state.layers = image_layers(record)
            # The image ID, not the manifest digest: the same image pulled (compressed layers) or
            # built here (uncompressed) keys the same, on every machine, so a shared cache hits.
            state.chain = cache_keys.step_key("image", {"config": record.config_digest})
        state.ensure_path()
        # Proxy settings passed with --build-arg reach RUN without an ARG line, as in Docker.
        state.args = {name: value for name, value in self.options.build_args.items() if name in PROXY_ARGS}
        return state

    # --- one step -----------------------------------------------------------------------------
    def _run_step(self, session: BuildSession, stage: Stage, state: ImageState, instruction: ast.Instruction,
                  step_index: int, writes: _CacheWrites, position: StepNumber) -> None:
        number = position.number
        text = summary(instruction)
        session.emit(Event(EventKind.STEP_START, stage.label, number, session.steps_total, text,
                           stage_step=position.stage_step, stage_steps=position.stage_steps))
        started = time.monotonic()
        try:
            self._key_and_run(session, stage, state, instruction, step_index, writes, position, text, started)
        except BaseException as error:
            self._emit_error(session, stage, position, error, started)
            raise

    def _key_and_run(self, session: BuildSession, stage: Stage, state: ImageState, instruction: ast.Instruction,
                     step_index: int, writes: _CacheWrites, position: StepNumber, text: str,
                     started: float) -> None:
        number = position.number
        step = prepare_step(StepInput(session, stage, state, instruction, self._expander(state, instruction),
                                      number=number))
        try:
            key = cache_keys.step_key(state.chain, step.components)
            no_cache = self.options.no_cache or bool({stage.label, str(stage.index)} & set(self.options.no_cache_filter))
            cached = None if no_cache else self._cached(key)
            source = "local"
            if cached is None and not no_cache:
                cached, label = self._remote(session, key)
                if cached is not None:
                    source = label
                    # Renderers prefix the step's number: "#5 found in registry host/app:cache".
                    session.emit(Event(EventKind.MESSAGE, stage.label, number, session.steps_total,
                                       f"found in {source}"))
                    if cached.layer is None or not self.store.is_lazy(cached.layer.digest):
                        writes.puts.append((key, cached.to_json()))
            with contextlib.ExitStack() as step_lock:
                if cached is None and not no_cache and step.makes_layer:
                    # Another build may be running this very step: wait for it, then take its result.
                    step_lock.enter_context(self.store.lock("step-" + key.removeprefix("sha256:")))
                    cached = self._cached(key)
                if cached is not None:
                    if source == "local":
                        writes.touched.append(key)
                    reason = ""
                else:
                    lineage = cache_keys.lineage_key(str(self.options.buildfile_name), stage.label, step_index)
                    reason = cache_keys.explain_miss(self.store.cache_get(lineage, touch=False), state.chain,
                                                     step.components, no_cache)
                    cached = self._execute(session, step, key)
                    writes.puts.append((key, cached.to_json()))
                    writes.puts.append((lineage, {"parent": state.chain, "components": step.components}))
                    if step.makes_layer:
                        writes.flush()  # at once: a build waiting on the step lock reads it next
        finally:
            step.close()
        step.apply(state)
        if cached.layer is not None:
            state.layers.append(cached.layer)
        # The history text comes from this build's step: an ARG's shows values that are, on
        # purpose, not in its key (Docker invalidates at an ARG's first use, not at the ARG).
        state.history.append({**cached.history, "created_by": step.created_by})
        state.chain = cached.chain
        seconds = time.monotonic() - started
        hit = not reason
        session.emit(Event(EventKind.STEP_CACHED if hit else EventKind.STEP_DONE, stage.label, number,
                           session.steps_total, text, seconds, cache_reason=reason,
                           stage_step=position.stage_step, stage_steps=position.stage_steps))
        result = StepResult(stage.label, number, text, hit, key, seconds,
                            cached.layer.diff_id if cached.layer else None, reason, source if hit else "")
        with session.lock:
            session.results.append(result)
            session.cache_log.append(LoggedStep(stage.index, key, {**cached.to_json(), "history": state.history[-1]}))

    def _execute(self, session: BuildSession, step: PreparedStep, key: str) -> CachedStep:
        layer = None
        if step.makes_layer:
            work = session.scratch_dir("step-")
            try:
                layer = step.execute(work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        history: dict[str, Any] = {"created": session.created(), "created_by": step.created_by}
        if layer is None:
            history["empty_layer"] = True
        # The chain follows what the step produced, not only what it was asked: a step run again
        # (--no-cache) that gives a different layer must not let later steps reuse old results.
        # A config change needs no place here: it is in the key, and so is everything it read.
        chain = cache_keys.step_key(key, {"layer": layer.diff_id if layer else None})
        return CachedStep(chain, layer, history)

    def _cached(self, key: str) -> CachedStep | None:
        found = self.store.cache_get(key, touch=False)
        cached = None if found is None else CachedStep.from_json(found)
        if cached is None or (cached.layer is not None and not self.store.has_layer(cached.layer.digest)):
            return None
        return cached

    def _remote(self, session: BuildSession, key: str) -> tuple[CachedStep | None, str]:
        """A step from the --cache-from sources: its layer stays where it is until read."""
        remote = session.remote_cache
        hit = None if remote is None else remote.lookup(key)
        if hit is None or remote is None:
            return None, ""
        cached = CachedStep.from_json(hit.entry.cached_step_json())
        if cached is None:
            return None, ""
        # The chain after a step follows from its key and its layer (see _execute): a record that
        # says otherwise would steer every later lookup, so it is not believed.
        expected = cache_keys.step_key(key, {"layer": cached.layer.diff_id if cached.layer else None})
        if cached.chain != expected or not remote.adopt(hit):
            return None, ""
        return cached, hit.source.label

    def _expander(self, state: ImageState, instruction: ast.Instruction):
        env = state.expansion_env()
        escape = self.escape

        def expand(raw: str) -> str:
            return expand_word(raw, env, pos=instruction.pos, escape=escape)

        return expand
