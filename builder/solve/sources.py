"""Where steps read files and images from: the build context, another stage, or an image.

One path loads or pulls an image for FROM, `COPY --from=<image>` and `RUN --mount=from=<image>`
alike, honouring `--pull` (pull even when the store has it) and pulling a name at most once per
build. A stage or image is flattened only when a step really runs, never to compute a cache
key, and then only as far as the step's paths reach.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import stat
import threading
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from builder.context.dockerignore import IgnoreMatcher, go_clean
from builder.context.statcache import StatCache
from builder.context.tree import BuildContext, component_matcher, unescape_component
from builder.errors import BuildError, ContextError, ImageNotFound, Pos
from builder.image import oci
from builder.image.store import ImageRecord, Store
from builder.plan.planner import Plan
from builder.platforms import Platform
from builder.progress import Event, EventKind
from builder.solve.options import BuildOptions
from builder.solve.state import ImageState, LayerRef


class SessionView(Protocol):
    """What sources need of the build session (BuildSession provides it)."""

    store: Store
    plan: Plan
    options: BuildOptions
    work_dir: Path
    lock: threading.Lock
    stage_states: dict[int, ImageState]

    def hold(self, manifest_digest: str) -> None: ...

    def emit(self, event: Event) -> None: ...

    def lower_dirs(self, layers: list[LayerRef]) -> list[Path]: ...

    def ignore_matcher(self) -> IgnoreMatcher: ...

    def stat_cache(self) -> StatCache: ...


class Source:
    """A place files are read from; `identity` stands for its content in cache keys (None for the
    context, whose selected files are hashed instead), `context()` gives it as a BuildContext."""

    def __init__(self, identity: str | None, make_context: Callable[[], BuildContext]) -> None:
        self.identity = identity
        self._make_context = make_context
        self._context: BuildContext | None = None

    def context(self) -> BuildContext:
        if self._context is None:
            self._context = self._make_context()
        return self._context


def image_layers(record: ImageRecord) -> list[LayerRef]:
    """An image's layers as (diff_id, blob) pairs, checked to agree in number."""
    diff_ids = oci.config_diff_ids(record.config)
    layers = oci.manifest_layers(record.manifest)
    if len(diff_ids) != len(layers):
        raise BuildError(
            f"image {record.manifest_digest} is inconsistent: its config and manifest list different numbers of layers",
            hint="re-import or re-pull the image",
        )
    return [LayerRef(diff_id, layer.digest, layer.size, layer.media_type) for diff_id, layer in zip(diff_ids, layers, strict=True)]


class SourceResolver:
    def __init__(self, session: SessionView) -> None:
        self.session = session
        self._images: dict[str, ImageRecord] = {}

    def context(self) -> Source:
        session = self.session
        return Source(None, lambda: BuildContext(session.options.context_dir, session.ignore_matcher()))

    def source_for(self, from_value: str | None, paths: Sequence[str], *, platform: Platform,
                   pos: Pos, source_line: str, step: int = 0) -> Source:
        """Where COPY/ADD or a bind mount reads `paths` from: the context, a stage, or an image."""
        if from_value is None:
            return self.context()
        session = self.session
        referenced = None
        for stage in session.plan.stages:
            if stage.name == from_value.lower():
                referenced = stage.index
        if referenced is None and from_value.isascii() and from_value.isdigit():  # int() refuses "²"
            referenced = int(from_value)
        if referenced is not None:
            with session.lock:
                source_state = session.stage_states[referenced]
            layers = list(source_state.layers)
            name = f"stage{referenced}"
            identity = "stage:" + source_state.chain
        else:
            record = self.load_or_pull(from_value, platform, pos=pos, source_line=source_line,
                                       what=f"--from={from_value}", step=step)
            layers = image_layers(record)
            name = "image-" + record.manifest_digest.split(":")[-1][:16]
            identity = "image:" + record.config_digest  # the image ID: the same wherever it came from
        reach = sorted({static_prefix(path) for path in paths})
        wild = [path for path in paths if _WILDCARD.search(path)]
        return Source(identity, lambda: BuildContext.for_rootfs(self._flattened(name, layers, reach, wild)))

    def load_or_pull(self, name: str, platform: Platform, *, pos: Pos | None, source_line: str | None,
                     what: str, step: int = 0) -> ImageRecord:
        """The image `name` from the store, or pulled (always pulled first with --pull); held in
        use until the build ends. `what` names the reference in errors (`FROM`, `--from=x`);
        a pull's progress events carry `step`."""
        session = self.session
        with session.lock:
            known = self._images.get(name)
        if known is not None:
            return known
        record = self._load_or_pull(name, platform, pos=pos, source_line=source_line, what=what, step=step)
        session.hold(record.manifest_digest)
        with session.lock:
            self._images.setdefault(name, record)
        return record

    def _load_or_pull(self, name: str, platform: Platform, *, pos: Pos | None, source_line: str | None,
                      what: str, step: int) -> ImageRecord:
        session = self.session
        if not session.options.pull:
            try:
                record = session.store.load_image(name)
            except ImageNotFound:
                pass
            else:
                self._warn_on_other_platform(record, name, platform, what)
                return record
        from builder.registry import pull

        try:
            return pull(session.store, name, platform=str(platform), insecure=session.options.insecure_registries,
                        on_event=session.emit, step=step)
        except BuildError as error:
            if error.pos is None:
                error.pos = pos
                error.source_line = source_line
            if not session.options.pull:
                missing = ("is not in the local store" if what == "FROM"
                           else "is neither in the local store nor a stage of this Buildfile")
                error.hint = (
                    f"{name!r} {missing}, and pulling it failed; add it with `builder import`, "
                    "`builder load` or `builder pull`, or check the name"
                ) + self._stage_like(name, what)
            raise

    def _stage_like(self, name: str, what: str) -> str:
        """`; did you mean the stage 'builder' (line 1)?` when `name` is a typo of a stage name."""
        if what == "FROM":
            return ""
        stages = {stage.name: stage for stage in self.session.plan.stages if stage.name}
        import difflib  # only on the way to an error message

        close = difflib.get_close_matches(name.lower(), list(stages), n=1, cutoff=0.7)
        if not close:
            return ""
        line = stages[close[0]].from_instruction.pos.line
        return f"; did you mean the stage {close[0]!r} (line {line})?"

    def _warn_on_other_platform(self, record: ImageRecord, name: str, wanted: Platform, what: str) -> None:
        """As buildx warns (InvalidBaseImagePlatform): a local image of another platform is used
        as it is, and RUN steps then need that platform's programs to run here."""
        config = record.config if isinstance(record.config, dict) else {}
        if not config.get("architecture"):
            return  # an image that does not say (an import without a platform): nothing to compare
        found = Platform.from_json(config)
        if not found.matches(wanted):
            self.session.emit(Event(
                EventKind.MESSAGE,
                text=f"warning: {what} {name}: the image in the store is {found}, not {wanted} as asked for this build",
            ))

    def _flattened(self, name: str, layers: list[LayerRef], reach: list[str], wild: Sequence[str] = ()) -> Path:
        from builder.snapshot.view import LayeredView, flatten

        session = self.session
        if "/" in reach:
            reach = ["/"]
        elif wild:
            # A symlink a wildcard matches is followed by the copy, possibly out of the reach.
            view = LayeredView(session.lower_dirs(layers))
            reach = sorted(set(reach) | {link for pattern in wild for link in matched_links(view, pattern)})
        label = f"{name}-" + hashlib.sha256("\0".join(reach).encode()).hexdigest()[:12]
        target = session.work_dir / f"src-{label}"
        with session.lock:
            if target.exists():
                return target
            partial = session.work_dir / f"partial-{label}"
            shutil.rmtree(partial, ignore_errors=True)
            flatten(session.lower_dirs(layers), partial, only=None if reach == ["/"] else reach)
            partial.rename(target)
            return target


_WILDCARD = re.compile(r"[*?\[\\]")


def matched_links(view: Any, pattern: str) -> list[str]:
    """The symlinks a wildcard source `pattern` matches in a LayeredView, walked as BuildKit
    walks a wildcard (never through a link): a copy follows them, so their targets must be there."""
    parts = [part for part in go_clean("/" + pattern.lstrip("/")).split("/") if part]
    wild_at = next((i for i, part in enumerate(parts) if _WILDCARD.search(part)), None)
    if wild_at is None:
        return []
    base = view.resolve("/" + "/".join(parts[:wild_at]), follow=True)
    if base is None:
        return []
    try:
        matchers = [component_matcher(part) for part in parts[wild_at:]]
    except ContextError:
        return []  # the copy itself reports the bad pattern
    literal = [unescape_component(part) for part in parts[wild_at:]]
    found: list[str] = []

    def walk(at: tuple[str, ...], depth: int) -> None:
        matcher, last = matchers[depth], depth == len(matchers) - 1
        for name in view.children(at):
            if not (matcher.fullmatch(name) if matcher is not None else name == literal[depth]):
                continue
            entry = view.entry(at + (name,))
            if entry is None:
                continue
            if last:
                if stat.S_ISLNK(entry[1].st_mode):
                    found.append("/" + "/".join(at + (name,)))
            elif stat.S_ISDIR(entry[1].st_mode):
                walk(at + (name,), depth + 1)

    walk(tuple(part for part in base.split("/") if part), 0)
    return found


def static_prefix(pattern: str) -> str:
    """The part of a source path before its first wildcard component: what a copy can reach."""
    kept: list[str] = []
    for part in pattern.split("/"):
        if _WILDCARD.search(part):
            break
        if part and part != ".":
            kept.append(part)
    return "/" + "/".join(kept)


def describe_source_for_key(source: Source, patterns: Sequence[str], *, pos: Pos, session: SessionView,
                            follow_links: bool = True) -> Any:
    """What a COPY's sources contribute to its cache key: the stage/image identity, or the
    content digest of what the patterns select in the context (symlinks given as sources
    followed as the copy follows them)."""
    if source.identity is not None:
        return source.identity
    if not patterns:
        return ""
    context = source.context()
    selected = context.select(list(patterns), pos=pos, follow_links=follow_links)
    return context.content_digest(selected, session.stat_cache())
