"""Walk the plan: resolve each stage's base, run its steps (from the cache where possible), and
assemble the final image in the store.

Stages that do not depend on each other run in parallel threads; RUN steps are subprocesses, so
the threads spend their time waiting.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import BuildError, ImageNotFound
from builder.image.inuse import hold_image
from builder.image.store import Store
from builder.parse import ast
from builder.parse.expand import expand_word
from builder.plan.planner import SCRATCH, Plan, Stage
from builder.plan.render import summary
from builder.plan.platforms import PROXY_ARGS, platform_args
from builder.progress import Event
from builder.solve import cache as cache_keys
from builder.solve.metadata import apply_metadata
from builder.solve.options import BuildOptions, StepResult
from builder.solve.state import ImageState, LayerRef
from builder.solve.steps import StepRunner

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def format_time(epoch: float) -> str:
    moment = dt.datetime.fromtimestamp(int(epoch), tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class _Step:
    """One step between its cache lookup and its result."""

    stage: Stage
    instruction: ast.Instruction
    number: int
    text: str
    started: float
    components: dict[str, Any]
    created_by: str
    parent_chain: str
    key: str
    lineage: str  # where the last components for this Buildfile position are kept
    no_cache: bool


@dataclass
class BuildSession:
    """Shared by all stages of one build."""

    store: Store
    plan: Plan
    options: BuildOptions
    work_dir: Path
    steps_total: int
    results: list[StepResult] = field(default_factory=list)
    stage_states: dict[int, ImageState] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    step_counter: int = 0
    # Images this build reads stay "in use" until it ends, so `rmi` cannot delete them under it.
    held_images: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, event: Event) -> None:
        if self.options.on_event is not None:
            self.options.on_event(event)

    def next_step_number(self) -> int:
        with self.lock:
            self.step_counter += 1
            return self.step_counter

    def hold(self, manifest_digest: str) -> None:
        with self.lock:
            self.held_images.enter_context(hold_image(self.store, manifest_digest))

    def created(self) -> str:
        if self.options.source_date_epoch is not None:
            return format_time(self.options.source_date_epoch)
        return format_time(time.time())


class Solver:
    def __init__(self, store: Store, plan: Plan, options: BuildOptions, escape: str = "\\") -> None:
        self.store = store
        self.plan = plan
        self.options = options
        self.escape = escape

    def solve(self) -> tuple[ImageState, list[StepResult]]:
        total = sum(1 + len(self.plan.stages[index].instructions) for index in self.plan.order)
        with self.store.tempdir("b") as work_dir, contextlib.ExitStack() as held_images:
            session = BuildSession(self.store, self.plan, self.options, Path(work_dir), total, held_images=held_images)
            futures: dict[int, Future[ImageState]] = {}
            pool = ThreadPoolExecutor(max_workers=max(1, min(4, len(self.plan.order))))
            try:
                for index in self.plan.order:
                    stage = self.plan.stages[index]
                    dependencies = [futures[dep] for dep in stage.depends_on]
                    futures[index] = pool.submit(self._run_stage, session, stage, dependencies)
                final = futures[self.plan.target].result()
                for future in futures.values():
                    future.result()
            except BaseException:
                # A failed stage or Ctrl-C: stop the other stages' sandboxes instead of waiting.
                session.cancelled.set()
                from builder.sandbox.runner import kill_all

                kill_all()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            session.results.sort(key=lambda result: result.number)
            return final, session.results

    # --- one stage ---------------------------------------------------------------------------
    def _run_stage(self, session: BuildSession, stage: Stage, dependencies: list[Future[ImageState]]) -> ImageState:
        for dependency in dependencies:
            dependency.result()  # re-raises a dependency's failure
        state = self._base_state(session, stage)
        runner = StepRunner(session, stage)
        number = session.next_step_number()
        from_text = summary(stage.from_instruction)
        session.emit(Event("step-start", stage.label, number, session.steps_total, from_text))
        session.emit(Event("step-done", stage.label, number, session.steps_total, from_text, 0.0))
        with session.lock:
            session.results.append(
                StepResult(stage.label, number, from_text, False, state.chain, 0.0, None, "base image")
            )
        cmd_set_in_stage = [False]
        instructions = list(self._onbuild_triggers(state, stage)) + list(stage.instructions)
        for step_index, instruction in enumerate(instructions, start=1):
            if session.cancelled.is_set():
                raise BuildError("build cancelled", hint="another stage failed or the build was interrupted")
            number = session.next_step_number()
            self._run_step(session, runner, stage, state, instruction, step_index, number, cmd_set_in_stage)
        with session.lock:
            session.stage_states[stage.index] = state
        return state

    def _onbuild_triggers(self, state: ImageState, stage: Stage) -> list[ast.Instruction]:
        """ONBUILD triggers of the base run right after FROM, then are cleared from the config."""
        from builder.parse import parse_buildfile

        triggers = state.config.pop("OnBuild", None) or []
        found: list[ast.Instruction] = []
        for text in triggers:
            parsed = parse_buildfile(f"FROM scratch\n{text}\n", path=f"{stage.base} (ONBUILD)")
            found.extend(parsed.instructions[1:])
        return found

    def _base_state(self, session: BuildSession, stage: Stage) -> ImageState:
        target = stage.platform or self.plan.target_platform
        if stage.base_stage is not None:
            with session.lock:
                parent = session.stage_states[stage.base_stage]
            state = parent.clone()
            state.chain = cache_keys.step_key(parent.chain, {"instruction": "FROM stage"})
            return state
        state = ImageState(os=target.os, architecture=target.architecture, variant=target.variant)
        if stage.base.lower() == SCRATCH:
            state.chain = cache_keys.step_key("scratch", {"platform": str(target)})
        else:
            record = self._load_base(stage, target)
            session.hold(record.manifest_digest)
            config = record.config
            state.config = dict(config.get("config") or {})
            state.history = list(config.get("history") or [])
            state.author = config.get("author", "")
            state.os = config.get("os", state.os)
            state.architecture = config.get("architecture", state.architecture)
            state.variant = config.get("variant", "")
            state.layers = _layers_of(record.manifest, config)
            state.chain = cache_keys.step_key("image", {"manifest": record.manifest_digest})
        state.args = self._proxy_args()
        return state

    def _proxy_args(self) -> dict[str, str]:
        """Proxy settings passed with --build-arg reach RUN without an ARG line, as in Docker."""
        return {name: value for name, value in self.options.build_args.items() if name in PROXY_ARGS}

    def _load_base(self, stage: Stage, platform):
        try:
            if self.options.pull:
                raise ImageNotFound("pull requested")
            return self.store.load_image(stage.base)
        except ImageNotFound:
            pass
        try:
            from builder.registry import pull
        except ImportError:
            pull = None
        if pull is None:
            raise ImageNotFound(
                f"base image {stage.base!r} is not in the store",
                pos=stage.from_instruction.pos,
                source_line=summary(stage.from_instruction),
                hint="add it with `builder import ROOTFS.tar NAME`, `builder load -i FILE` or `builder pull NAME`",
            )
        try:
            return pull(self.store, stage.base, platform=str(platform), insecure=self.options.insecure_registries)
        except BuildError as error:
            if error.pos is None:
                error.pos = stage.from_instruction.pos
                error.source_line = summary(stage.from_instruction)
            if not self.options.pull:
                error.hint = (
                    f"{stage.base!r} is not in the local store and pulling it failed; "
                    "add it with `builder import`, `builder load` or `builder pull`, or check the name"
                )
            raise

    # --- one step -----------------------------------------------------------------------------
    def _run_step(
        self,
        session: BuildSession,
        runner: StepRunner,
        stage: Stage,
        state: ImageState,
        instruction: ast.Instruction,
        step_index: int,
        number: int,
        cmd_set_in_stage: list[bool],
    ) -> None:
        text = summary(instruction)
        session.emit(Event("step-start", stage.label, number, session.steps_total, text))
        started = time.monotonic()
        expand = self._expander(state, instruction)

        if isinstance(instruction, ast.Arg):
            created_by = self._apply_arg(session, stage, state, instruction, expand)
            components: dict[str, Any] = {"instruction": created_by}
        elif isinstance(instruction, (ast.Run, ast.Copy, ast.Add)):
            components = runner.components(instruction, state, expand)
            created_by = components["created_by"]
        else:
            before = state.clone()
            created_by = apply_metadata(instruction, state, expand, cmd_set_in_stage=cmd_set_in_stage)
            components = {"instruction": created_by}
            # metadata steps are applied eagerly; the cache only decides the history entry
            staged_config = state.config
            state.config = before.config
            components["config"] = staged_config

        parent_chain = state.chain
        key = cache_keys.step_key(parent_chain, {k: v for k, v in components.items() if k != "config"})
        lineage = cache_keys.lineage_key(str(self.options.buildfile_name), stage.label, step_index)
        no_cache = self.options.no_cache or bool(
            {stage.label, str(stage.index)} & set(self.options.no_cache_filter)
        )
        cached = None if no_cache else self._cached(key)
        step_lock: int | None = None
        if cached is None and not no_cache:
            # Another build may be running this very step: wait for it, then take its result.
            step_lock = self._lock_step(key)
            cached = self._cached(key)
        step = _Step(stage, instruction, number, text, started, components, created_by, parent_chain, key, lineage, no_cache)
        try:
            self._finish_step(session, runner, state, step, cached)
        finally:
            if step_lock is not None:
                os.close(step_lock)

    def _cached(self, key: str) -> dict | None:
        cached = self.store.cache_get(key)
        if cached is None or "chain" not in cached:
            return None
        if not all(self.store.has_blob(layer["digest"]) for layer in cached["state"]["layers"]):
            return None
        return cached

    def _lock_step(self, key: str) -> int:
        path = self.store.locks_dir / ("step-" + key.removeprefix("sha256:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _finish_step(
        self, session: BuildSession, runner: StepRunner, state: ImageState, step: "_Step", cached: dict | None
    ) -> None:
        stage, instruction, number, text, started = step.stage, step.instruction, step.number, step.text, step.started
        components, parent_chain, key = step.components, step.parent_chain, step.key
        if cached is not None:
            state.restore_json(cached["state"])
            state.chain = cached["chain"]
            seconds = time.monotonic() - started
            session.emit(Event("step-cached", stage.label, number, session.steps_total, text, seconds))
            result = StepResult(stage.label, number, text, True, key, seconds, cached.get("layer_diff_id"))
        else:
            previous = self.store.cache_get(step.lineage)
            public_components = {k: v for k, v in components.items() if k not in ("config", "created_by")}
            reason = cache_keys.explain_miss(previous, parent_chain, public_components, step.no_cache)
            layer: LayerRef | None = None
            if isinstance(instruction, (ast.Run, ast.Copy, ast.Add)):
                layer = runner.execute(instruction, state, components)
            elif "config" in components:
                state.config = components["config"]
            entry: dict[str, Any] = {"created": session.created(), "created_by": step.created_by}
            if layer is None:
                entry["empty_layer"] = True
            else:
                state.layers.append(layer)
            state.history.append(entry)
            # The chain follows what the step produced, not only what it was asked: a step run again
            # (--no-cache) that gives a different layer must not let later steps reuse old results.
            state.chain = cache_keys.step_key(key, {"layer": layer.diff_id if layer else None, "config": state.config})
            self.store.cache_put(key, {
                "state": state.snapshot_json(),
                "chain": state.chain,
                "layer_diff_id": layer.diff_id if layer else None,
            })
            self.store.cache_put(step.lineage, {"parent": parent_chain, "components": public_components})
            seconds = time.monotonic() - started
            session.emit(Event("step-done", stage.label, number, session.steps_total, text, seconds, cache_reason=reason))
            result = StepResult(stage.label, number, text, False, key, seconds, layer.diff_id if layer else None, reason)
        with session.lock:
            session.results.append(result)

    def _expander(self, state: ImageState, instruction: ast.Instruction):
        env = state.expansion_env()
        escape = self.escape

        def expand(raw: str) -> str:
            return expand_word(raw, env, pos=instruction.pos, escape=escape)

        return expand

    def _apply_arg(
        self, session: BuildSession, stage: Stage, state: ImageState, instruction: ast.Arg, expand
    ) -> str:
        build_args = self.options.build_args
        global_values = dict(self.plan.global_args)
        automatic = platform_args(self.plan.build_platform, stage.platform or self.plan.target_platform)
        shown: list[str] = []
        for name, raw_default in instruction.args:
            value: str | None
            if name in build_args:
                value = build_args[name]
            elif raw_default is not None:
                value = expand(raw_default)
            elif name in automatic:
                value = automatic[name]
            else:
                value = global_values.get(name)
            if value is not None:
                state.args[name] = value
            shown.append(name if raw_default is None else f"{name}={raw_default}")
        # The value is left out on purpose: Docker invalidates at the first use of an ARG, not here.
        return "ARG " + " ".join(shown)




def _layers_of(manifest: dict[str, Any], config: dict[str, Any]) -> list[LayerRef]:
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    layers = manifest.get("layers") or []
    if len(diff_ids) != len(layers):
        raise BuildError(
            "base image is inconsistent: its config and manifest list different numbers of layers",
            hint="re-import or re-pull the base image",
        )
    return [
        LayerRef(diff_id, descriptor["digest"], int(descriptor["size"]), descriptor["mediaType"])
        for diff_id, descriptor in zip(diff_ids, layers)
    ]


def assemble_image(
    store: Store, state: ImageState, options: BuildOptions, created: str
) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    """Write config and manifest blobs; returns (config digest, config, manifest digest, manifest)."""
    image_config = dict(state.config)
    if options.labels:
        image_config["Labels"] = {**(image_config.get("Labels") or {}), **options.labels}
    config: dict[str, Any] = {
        "created": created,
        "architecture": state.architecture,
        "os": state.os,
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in state.layers]},
        "history": state.history,
    }
    if state.variant:
        config["variant"] = state.variant
    if state.author:
        config["author"] = state.author
    config_digest, config_size = store.put_json(config)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [
            {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size} for layer in state.layers
        ],
        "annotations": {"org.opencontainers.image.created": created},
    }
    record = store.save_image(manifest, config)
    return config_digest, config, record.manifest_digest, manifest
