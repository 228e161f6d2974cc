"""The library call: `builder.build(...)`. The CLI is a thin layer over this."""
from __future__ import annotations

import errno
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import builder.fetchers  # noqa: F401 - layers a build took from a registry cache can be fetched
from builder.arguments import check_build_arguments
from builder.cache.steplog import select_steps
from builder.cancel import Cancellation
from builder.context.inroot import read_limited, relative_to_context, resolve_in_context
from builder.errors import BuildError, CacheError, ContextError, ParseError, Pos, StoreError
from builder.image.inuse import hold_store_for_build
from builder.image.oci import check_source_date_epoch, format_time, parse_source_date_epoch, source_date_epoch_from_env
from builder.image.store import Store
from builder.image.variants import effective_level
from builder.parse.cached import parse_cached
from builder.parse.lines import MAX_BUILDFILE_BYTES, check_size, split_physical_lines
from builder.plan.planner import Plan, make_plan
from builder.plan.platforms import Platform
from builder.progress import Event, EventCallback, EventKind, GuardedCallback, error_message
from builder.solve.assemble import assemble_image
from builder.solve.options import BuildOptions, BuildResult, StepResult
from builder.solve.solver import Solver, step_count

if TYPE_CHECKING:
    from builder.cache.spec import CacheSpec
    from builder.export.output import OutputSpec

__all__ = ["build", "plan", "BuildResult", "StepResult", "Cancellation", "find_buildfile", "source_date_epoch_from_env"]


def find_buildfile(context: Path, file: str | os.PathLike[str] | None) -> Path:
    """`-f` as given, else `Buildfile`, then `Dockerfile`, in the context.

    The path returned is the name, not where a symlink leads: `read_buildfile` resolves a
    Buildfile inside the context itself and refuses one that leads out of it.
    """
    if file is not None:
        path = Path(file)
        inside = relative_to_context(context, path)
        found = resolve_in_context(context, inside, "Buildfile") if inside is not None else path
        if found is None or not found.is_file():
            raise ContextError(f"Buildfile {str(path)!r} not found", hint="check the path given to -f/--file")
        return path
    for name in ("Buildfile", "Dockerfile"):
        candidate = context / name
        if os.path.lexists(candidate):
            return candidate  # even a link out of the context: refused when read, no fallback
    raise ContextError(
        f"no Buildfile or Dockerfile in {str(context)!r}",
        hint="name one with -f/--file, or create Buildfile in the context directory",
    )


def read_buildfile(context: Path, file, buildfile_text: str | None) -> tuple[Path | None, str, str]:
    if buildfile_text is not None:
        return None, buildfile_text, str(file) if file not in (None, "-") else "Buildfile"
    path = find_buildfile(context, file)
    shown = _display_path(path)
    inside = relative_to_context(context, path)
    if inside is not None:
        # Resolved inside the context by this code; a link out of it is a ContextError.
        host = resolve_in_context(context, inside, "Buildfile")
        if host is None:
            raise ContextError(f"Buildfile {str(path)!r} not found", hint="check the path given to -f/--file")
        data = read_limited(host, MAX_BUILDFILE_BYTES, "Buildfile", follow_links=False)
    else:
        data = read_limited(path, MAX_BUILDFILE_BYTES, "Buildfile", follow_links=True)  # the user's own file
    return path, decode_buildfile(data, shown), shown


def decode_buildfile(data: bytes, shown: str) -> str:
    """The Buildfile's text from at most MAX_BUILDFILE_BYTES + 1 bytes read from it.

    Errors name the position, never the bytes: what was read may not be a Buildfile at all.
    """
    if len(data) > MAX_BUILDFILE_BYTES:
        prefix = data[: MAX_BUILDFILE_BYTES + 1].decode("utf-8", errors="replace")
        check_size(split_physical_lines(prefix), shown, truncated=True)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ParseError(
            "the Buildfile is not UTF-8 text", pos=Pos(shown, line, column), hint="save the Buildfile as UTF-8"
        ) from None


def _buildfile_by_name(context: Path, path: Path) -> Path:
    """The Buildfile's absolute path as named, not where a symlink leads (its ignore file is
    `<name>.dockerignore` beside the name, as in BuildKit); inside the context it is rebased
    on the context's real path, so `IgnoreMatcher.load` sees it inside and resolves it there."""
    inside = relative_to_context(context, path)
    if inside is None:
        return Path(os.path.abspath(path))
    return Path(os.path.realpath(context), inside)


def _display_path(path: Path) -> str:
    """Relative to the working directory when below it, as users type it; else absolute.

    Lexical: a Buildfile that is a symlink is shown by its own name, not its target's.
    """
    absolute = os.path.abspath(path)
    cwd = os.getcwd()
    if absolute.startswith(cwd.rstrip("/") + "/"):
        return absolute[len(cwd.rstrip("/")) + 1 :]
    return absolute


def plan(
    context: str | os.PathLike[str] = ".",
    *,
    file: str | os.PathLike[str] | None = None,
    buildfile_text: str | None = None,
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    platform: str | None = None,
) -> Plan:
    """Parse and plan without building: what `build --print-plan` shows."""
    context_dir = Path(context)
    path, text, shown = read_buildfile(context_dir, file, buildfile_text)
    buildfile = parse_cached(text, shown, None)
    return make_plan(
        buildfile,
        build_args=build_args,
        target=target,
        target_platform=Platform.parse(platform) if platform else None,
    )


def build(
    context: str | os.PathLike[str] = ".",
    *,
    file: str | os.PathLike[str] | None = None,
    buildfile_text: str | None = None,
    tags: Sequence[str] = (),
    build_args: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    target: str | None = None,
    platform: str | None = None,
    outputs: Sequence[str] = (),
    root: str | os.PathLike[str] | None = None,
    on_event: EventCallback | None = None,
    no_cache: bool = False,
    no_cache_filter: Sequence[str] = (),
    compression: str = "gzip",
    compression_level: int | None = None,
    source_date_epoch: int | None = None,
    reproducible: bool = False,
    snapshotter: str = "auto",
    network: str = "default",
    pull: bool = False,
    insecure_registries: Sequence[str] = (),
    secrets: Mapping[str, str | os.PathLike[str]] | None = None,
    cancel: Cancellation | None = None,
    cache_to: Sequence[str] = (),
    cache_from: Sequence[str] = (),
) -> BuildResult:
    """Build an image from a Buildfile and a context directory, like `build` on the command line.

    context: the build context directory. file: the Buildfile (default CONTEXT/Buildfile, then
    CONTEXT/Dockerfile); or buildfile_text: the Buildfile's text itself. tags: names for the
    image ("name:tag"). build_args, labels: str -> str. target: the stage to build. platform:
    "os/arch[/variant]". outputs: output specs as for `-o` ("type=oci,dest=out.tar", ...).
    root: the store directory (default $BUILDER_ROOT, else $XDG_DATA_HOME/builder).
    on_event: called with each `Event` (see `EventKind`), from the build's threads; an exception
    it raises never stops the build (the first is reported as a RuntimeWarning). no_cache,
    no_cache_filter (stage names), compression ("gzip", "zstd", "uncompressed"),
    compression_level, source_date_epoch (else $SOURCE_DATE_EPOCH), reproducible (epoch 0 when
    none is set), snapshotter ("auto", "overlay", "copy"), network ("default", "host", "none"),
    pull, insecure_registries, secrets (id -> file for RUN --mount=type=secret): as the CLI flags.
    cancel: a `Cancellation`; calling its cancel() from another thread stops this build (and
    only this one) with `BuildCancelled`. cache_to, cache_from: as `--cache-to`/`--cache-from`
    ("type=registry,ref=host/repo:cache,mode=max", "type=local,src=dir", "host/app:1", ...;
    docs/CACHE.md): a cache that cannot be read or written is a warning, not an error.

    Returns a BuildResult with the image id (config digest), the manifest digest, the config,
    and one StepResult per step (cached or not, and why not). Raises a BuildError subclass for
    every user mistake (`InvalidArgument` for an argument of the wrong type); nothing incomplete
    is left visible in the store. Builds may run at once in several threads of one process.
    """
    check_build_arguments(
        context=context, file=file, buildfile_text=buildfile_text, tags=tags, build_args=build_args,
        labels=labels, target=target, platform=platform, outputs=outputs, root=root, on_event=on_event,
        no_cache=no_cache, no_cache_filter=no_cache_filter, compression=compression,
        compression_level=compression_level, source_date_epoch=source_date_epoch, reproducible=reproducible,
        snapshotter=snapshotter, network=network, pull=pull, insecure_registries=insecure_registries,
        secrets=secrets, cancel=cancel, cache_to=cache_to, cache_from=cache_from,
    )
    if on_event is not None:
        on_event = GuardedCallback(on_event)
    began = time.monotonic()
    context_dir = Path(context)
    if not context_dir.is_dir():
        raise ContextError(f"build context {str(context_dir)!r} is not a directory", hint="pass the context directory, e.g. .")
    effective_level(compression, compression_level)  # an unknown compression or level fails before any work
    if source_date_epoch is None and build_args and "SOURCE_DATE_EPOCH" in build_args:
        # As BuildKit (0.11+) takes it: the build arg sets the build's epoch, ahead of the environment.
        source_date_epoch = parse_source_date_epoch(build_args["SOURCE_DATE_EPOCH"], "--build-arg SOURCE_DATE_EPOCH")
    elif source_date_epoch is None:
        source_date_epoch = source_date_epoch_from_env()
    else:
        check_source_date_epoch(source_date_epoch, "source_date_epoch")
    if source_date_epoch is None and reproducible:
        source_date_epoch = 0
        if on_event is not None:
            on_event(Event(EventKind.MESSAGE, text="--reproducible without SOURCE_DATE_EPOCH: using timestamp 0 (1970-01-01)"))

    output_specs, cache_exports, cache_imports = _parse_specs(outputs, cache_to, cache_from)
    store = Store.open(root)
    path, text, shown = read_buildfile(context_dir, file, buildfile_text)
    buildfile = parse_cached(text, shown, store.parser_cache_dir)
    the_plan = make_plan(
        buildfile,
        build_args=build_args,
        target=target,
        target_platform=Platform.parse(platform) if platform else None,
    )
    if the_plan.unused_build_args and on_event is not None:
        # BuildKit's warning, in its words: a misspelt --build-arg is otherwise silently ignored.
        on_event(Event(EventKind.MESSAGE, text="warning: one or more build args were not consumed: "
                                              + ", ".join(the_plan.unused_build_args)))
    options = BuildOptions(
        context_dir=context_dir.resolve(),
        buildfile_path=_buildfile_by_name(context_dir, path) if path else None,
        buildfile_text=text,
        buildfile_name=shown,
        tags=tuple(tags),
        build_args=dict(build_args or {}),
        labels=dict(labels or {}),
        target=target,
        platform=platform,
        no_cache=no_cache,
        no_cache_filter=tuple(name.lower() for name in no_cache_filter),
        source_date_epoch=source_date_epoch,
        snapshotter=snapshotter,
        network=network,
        pull=pull,
        insecure_registries=tuple(insecure_registries),
        secrets={name: Path(path) for name, path in (secrets or {}).items()},
        on_event=on_event,
        cancel=cancel,
        cache_from=cache_imports,
    )
    solver = Solver(store, the_plan, options, escape=buildfile.escape)
    if on_event is not None:
        on_event(Event(EventKind.BUILD_START, total=step_count(the_plan) + len(outputs), text=shown))
    try:
        # Held shared for the whole build, so `builder prune` never collects a blob written here
        # before the image or cache entry that references it exists.
        with hold_store_for_build(store):
            final_state, steps = solver.solve()
            created = (
                format_time(source_date_epoch)
                if source_date_epoch is not None
                else (final_state.history[-1]["created"] if final_state.history else format_time(0))
            )
            final_stages = _final_stages(the_plan)
            annotations = {}
            if any(spec.type == "inline" for spec in cache_exports):
                from builder.cache.exporter import inline_annotation
                from builder.cache.record import INLINE_ANNOTATION

                annotations[INLINE_ANNOTATION] = inline_annotation(select_steps(solver.cache_log, "min", final_stages))
            config_digest, config, manifest_digest, manifest = assemble_image(store, final_state, options, created,
                                                                              annotations)
            for tag in tags:
                store.tag(tag, manifest_digest)
            exported = []
            # Numbered after every step (ONBUILD triggers included), in the order given.
            number = max(step.number for step in steps)
            for text, spec in zip(outputs, output_specs, strict=True):
                number += 1
                shipped = _export(store, manifest_digest, spec, list(tags), compression, compression_level,
                                  on_event, number)
                if shipped is not None:
                    exported.append((text, shipped))
            for cache_spec in cache_exports:
                if cache_spec.type == "inline":
                    continue
                if cache_spec.compression is None:  # as the image's layers go out: the same blobs
                    cache_spec = replace(cache_spec, compression=compression,
                                         compression_level=cache_spec.compression_level
                                         if cache_spec.compression_level is not None else compression_level)
                _export_cache(store, cache_spec, select_steps(solver.cache_log, cache_spec.mode, final_stages),
                              options, on_event)
    except BrokenPipeError:
        raise  # `-o dest=- | head`: the reader left; the CLI ends quietly, as cat does
    except OSError as error:
        raise _os_error_as_build_error(error, store.root) from None
    if on_event is not None:
        on_event(Event(EventKind.BUILD_DONE, id=config_digest, seconds=time.monotonic() - began,
                       text=f"image {config_digest}" + "".join(f"\nnamed {tag}" for tag in tags)))
    return BuildResult(
        image_id=config_digest,
        manifest_digest=manifest_digest,
        config=config,
        manifest=manifest,
        tags=tuple(tags),
        steps=tuple(steps),
        exported=tuple(exported),
    )


def _parse_specs(outputs: Sequence[str], cache_to: Sequence[str],
                 cache_from: Sequence[str]) -> tuple[list[OutputSpec], list[CacheSpec], tuple[CacheSpec, ...]]:
    """-o, --cache-to and --cache-from read before any work (their modules load only when given)."""
    output_specs: list[OutputSpec] = []
    if outputs:
        from builder.export.output import parse_output_spec

        output_specs = [parse_output_spec(spec) for spec in outputs]
    cache_exports: list[CacheSpec] = []
    cache_imports: tuple[CacheSpec, ...] = ()
    if cache_to or cache_from:
        from builder.cache.spec import parse_cache_from, parse_cache_to

        cache_exports = [parse_cache_to(spec) for spec in cache_to]
        cache_imports = tuple(parse_cache_from(spec) for spec in cache_from)
    return output_specs, cache_exports, cache_imports


def _export(store: Store, manifest_digest: str, spec, tags: list[str], compression: str,
            compression_level: int | None, on_event: EventCallback | None, number: int) -> str | None:
    """One --output, as a numbered item of the build's progress."""
    from builder.export.output import describe_output, write_output

    started = time.monotonic()
    shown = describe_output(spec)
    if on_event is not None:
        on_event(Event(EventKind.EXPORT_START, step=number, text=shown))
    try:
        shipped = write_output(store, manifest_digest, spec, tags, compression=compression,
                               compression_level=compression_level, on_event=on_event, step=number)
    except BaseException as error:
        if on_event is not None:
            on_event(Event(EventKind.STEP_ERROR, step=number, text=error_message(error),
                           seconds=time.monotonic() - started))
        raise
    if on_event is not None:
        on_event(Event(EventKind.EXPORT_DONE, step=number, text=shown, id=shipped or "",
                       seconds=time.monotonic() - started))
    return shipped


def _final_stages(the_plan: Plan) -> set[int]:
    """The target stage and the stages it is built FROM: the steps of the final image."""
    found: set[int] = set()
    index: int | None = the_plan.target
    while index is not None and index not in found:
        found.add(index)
        index = the_plan.stages[index].base_stage
    return found


def _export_cache(store: Store, spec: CacheSpec, steps: list, options: BuildOptions,
                  on_event: EventCallback | None) -> None:
    """One --cache-to; a failure is a warning unless the spec says ignore-error=false."""
    from builder.cache.exporter import export_cache
    from builder.cache.layout import LayoutError

    try:
        digest = export_cache(store, spec, steps, insecure=options.insecure_registries)
    except (BuildError, LayoutError, OSError) as error:
        reason = getattr(error, "message", None) or str(error)
        if not spec.ignore_error:
            raise CacheError(f"cannot export the build cache to {spec.label}: {reason}",
                             hint="drop ignore-error=false to make this a warning") from None
        if on_event is not None:
            on_event(Event(EventKind.MESSAGE, text=f"warning: cannot export the build cache to {spec.label}: {reason}"))
        return
    if on_event is not None:
        on_event(Event(EventKind.MESSAGE, text=f"cache: {len(steps)} steps written to {spec.label} ({digest})"))


def _os_error_as_build_error(error: OSError, store_root: Path) -> BuildError:
    if error.errno == errno.ENOSPC:
        return StoreError(
            f"no space left on the device holding the store ({store_root})",
            hint="free some space (`builder prune`), or put the store elsewhere with --root",
        )
    where = f" ({error.filename})" if error.filename else ""
    return BuildError(f"{error.strerror or error}{where}", hint="a file system error stopped the build")
