"""What every stage and step of one build shares: the store, the plan, the options, a scratch
area, the results so far, and the helpers steps use (sources, the stat cache, the executor)."""
from __future__ import annotations

import contextlib
import tempfile
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from builder.cache.steplog import LoggedStep
from builder.context.dockerignore import IgnoreMatcher
from builder.context.statcache import StatCache
from builder.image.inuse import hold_image
from builder.image.oci import format_time
from builder.image.store import Store
from builder.plan.planner import Plan
from builder.progress import Event, EventKind
from builder.solve.executor import Executor
from builder.solve.options import BuildOptions, StepResult
from builder.solve.sources import SourceResolver
from builder.solve.state import ImageState, LayerRef

if TYPE_CHECKING:
    from builder.cache.importer import CacheImporter


@dataclass
class BuildSession:
    """Shared by all stages of one build."""

    store: Store
    plan: Plan
    options: BuildOptions
    work_dir: Path
    executor: Executor
    steps_total: int
    results: list[StepResult] = field(default_factory=list)
    stage_states: dict[int, ImageState] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Stage index -> the number of its FROM step (solver.first_step_numbers); ONBUILD triggers,
    # known only at run time, are numbered after all of them from step_counter.
    first_numbers: dict[int, int] = field(default_factory=dict)
    step_counter: int = -1
    # Images this build reads stay "in use" until it ends, so `rmi` cannot delete them under it.
    held_images: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    cancelled: threading.Event = field(default_factory=threading.Event)
    sources: SourceResolver = field(init=False)
    # The --cache-from sources (None without any), and every step as it ended, for --cache-to.
    remote_cache: CacheImporter | None = field(init=False, default=None)
    cache_log: list[LoggedStep] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sources = SourceResolver(self)
        if self.step_counter < 0:
            self.step_counter = self.steps_total
        if self.options.cache_from:
            from builder.cache.importer import CacheImporter

            self.remote_cache = CacheImporter(
                self.store, self.options.cache_from, platform=str(self.plan.target_platform),
                insecure=self.options.insecure_registries,
                warn=lambda text: self.emit(Event(EventKind.MESSAGE, text=f"warning: {text}")))

    def emit(self, event: Event) -> None:
        if self.options.on_event is not None:
            self.options.on_event(event)

    def next_step_number(self) -> int:
        """A number for a step the plan did not know of (an ONBUILD trigger), after the plan's."""
        with self.lock:
            self.step_counter += 1
            return self.step_counter

    def hold(self, manifest_digest: str) -> None:
        with self.lock:
            self.held_images.enter_context(hold_image(self.store, manifest_digest))

    def created(self) -> str:
        """The time stamp of a history entry made now: SOURCE_DATE_EPOCH when set."""
        return format_time(self.options.source_date_epoch)

    def scratch_dir(self, prefix: str) -> Path:
        """A fresh private directory under the build's work dir (removed with it at the end)."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.work_dir))

    # Made on first use, by whichever stage thread asks first; cached_property is not atomic,
    # hence the lock.
    @cached_property
    def _ignore_matcher(self) -> IgnoreMatcher:
        return IgnoreMatcher.load(self.options.context_dir, self.options.buildfile_path)

    @cached_property
    def _stat_cache(self) -> StatCache:
        return StatCache(self.store.root / "statcache.db")

    def ignore_matcher(self) -> IgnoreMatcher:
        with self.lock:
            return self._ignore_matcher

    def stat_cache(self) -> StatCache:
        with self.lock:
            return self._stat_cache

    def commit_layer(self, layer_dir: Path | None, *, keep_empty: bool = False) -> LayerRef | None:
        """Store a step's layer dir (taken over by the store, never compressed); None when it
        holds nothing, unless `keep_empty` (BuildKit keeps WORKDIR's layer even when empty)."""
        if layer_dir is None or (not keep_empty and not any(layer_dir.iterdir())):
            return None
        digests = self.store.put_layer_from_dir(layer_dir, source_date_epoch=self.options.source_date_epoch)
        return LayerRef(digests.diff_id, digests.digest, digests.size, digests.media_type)

    def lower_dirs(self, layers: list[LayerRef]) -> list[Path]:
        return [self.store.snapshot_dir(layer.diff_id, layer.digest) for layer in layers]
