"""Command line: argument parsing and output only; the work is done by the library API."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from builder.errors import BuildError

# Modules that add their own subcommands through `register(subparsers)`.
COMMAND_MODULES = (
    "builder.commands.images",
    "builder.commands.registry_cmds",
    "builder.commands.run",
    "builder.commands.maintenance",
    "builder.commands.diff",
    "builder.commands.unshare",
)


def _key_value(text: str, what: str, from_env: bool = False) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"{what} {text!r} needs a name: NAME=VALUE")
    if not sep:
        if from_env:
            # Docker: `--build-arg NAME` takes the value from the environment, if set.
            if name in os.environ:
                return name, os.environ[name]
            return name, "\0unset"
        raise argparse.ArgumentTypeError(f"{what} {text!r} must be NAME=VALUE")
    return name, value


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("context", nargs="?", default=None, help="the build context directory (default: .)")
    parser.add_argument("-f", "--file", help="the Buildfile (default: CONTEXT/Buildfile, then CONTEXT/Dockerfile; - reads stdin)")
    parser.add_argument("-t", "--tag", action="append", default=[], help="name the image NAME[:TAG]; repeatable")
    parser.add_argument("--build-arg", action="append", default=[], metavar="NAME[=VALUE]", help="set a build-time variable")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="add a label to the image")
    parser.add_argument("--target", help="build this stage and the stages it needs")
    parser.add_argument("--platform", help="target platform, os/arch[/variant]")
    parser.add_argument("-o", "--output", action="append", default=[], metavar="SPEC",
                        help="type=oci|docker|tar|local|registry,dest=PATH[,tar=false]; repeatable")
    parser.add_argument("--iidfile", help="write the image id to this file")
    parser.add_argument("--metadata-file", help="write the build's digests as JSON to this file")
    parser.add_argument("--cache-to", action="append", default=[], metavar="SPEC",
                        help="export the build cache: type=registry,ref=HOST/REPO:TAG[,mode=min|max] | "
                             "type=local,dest=DIR | type=inline; repeatable")
    parser.add_argument("--cache-from", action="append", default=[], metavar="SPEC",
                        help="use a shared build cache: type=registry,ref=REF (or REF alone) | type=local,src=DIR; "
                             "repeatable, tried in order")
    parser.add_argument("--no-cache", action="store_true", help="run every step again")
    parser.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE", help="do not use the cache for this stage")
    parser.add_argument("--explain-cache", action="store_true", help="say for every step why it was or was not cached")
    # builder.display.PROGRESS_MODES, written out so `builder --help` imports no progress code
    parser.add_argument("--progress", default="auto", choices=["auto", "tty", "plain", "quiet", "rawjson", "json"],
                        help="auto (tty on a terminal, else plain), tty (a live view), plain (#N-prefixed lines), "
                             "quiet, rawjson (JSON lines, see docs/PROGRESS.md; json is an alias)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    parser.add_argument("--compression", default="gzip", choices=["gzip", "zstd", "uncompressed"], help="layer compression")
    parser.add_argument("--compression-level", type=int, help="compression level")
    parser.add_argument("--source-date-epoch", type=int, help="timestamp for everything this build writes (or $SOURCE_DATE_EPOCH)")
    parser.add_argument("--reproducible", action="store_true", help="use timestamp 0 when no SOURCE_DATE_EPOCH is set")
    parser.add_argument("--snapshotter", default="auto", choices=["auto", "overlay", "copy"], help="how RUN steps get their file system")
    parser.add_argument("--network", default="default", choices=["default", "host", "none"],
                        help="default network of RUN steps: default (private, outbound through slirp4netns), host, none")
    parser.add_argument("--pull", action="store_true", help="pull base images even when the store has them")
    parser.add_argument("--push", action="store_true", help="push every tag after the build")
    parser.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]", help="allow plain HTTP to this registry")
    parser.add_argument("--secret", action="append", default=[], metavar="id=ID,src=PATH",
                        help="a file RUN --mount=type=secret can read; never stored in the image or cache")
    parser.add_argument("--print-plan", nargs="?", const="text", metavar="text|dot", help="print the plan (text, the default, or dot) and stop")
    parser.add_argument("--load", action="store_true",
                        help="accepted as in docker buildx: every image lands in the store anyway (see `builder images`)")
    parser.add_argument("--print-ast", action="store_true", help="print the parsed Buildfile as JSON and stop")


def _parse_pairs(values: Sequence[str], what: str, from_env: bool = False) -> dict[str, str]:
    found: dict[str, str] = {}
    for text in values:
        try:
            name, value = _key_value(text, what, from_env)
        except argparse.ArgumentTypeError as error:
            raise BuildError(str(error), hint=f"write {what} as NAME=VALUE") from None
        if value != "\0unset":
            found[name] = value
    return found


def run_build(args: argparse.Namespace) -> int:
    from builder import api
    from builder.display import make_progress

    _settle_print_plan(args)
    if args.load:
        print("note: --load has nothing to do: the image is in the store (`builder images`)", file=sys.stderr)
    context = Path(args.context or ".")
    buildfile_text = None
    file = args.file
    if file == "-":
        # Bounded like a Buildfile read from disk: at most the limit and one byte more.
        buildfile_text = api.decode_buildfile(sys.stdin.buffer.read(api.MAX_BUILDFILE_BYTES + 1), "Buildfile")
    build_args = _parse_pairs(args.build_arg, "--build-arg", from_env=True)
    _check_build_values(args)
    if args.print_ast:
        from builder.parse import parse_buildfile
        from builder.parse.dump import ast_to_data

        path, text, shown = api.read_buildfile(context, file, buildfile_text)
        print(json.dumps(ast_to_data(parse_buildfile(text, path=shown)), indent=2, ensure_ascii=False))
        return 0
    if args.print_plan:
        from builder.plan.render import render_dot, render_text

        the_plan = api.plan(
            context, file=file, buildfile_text=buildfile_text, build_args=build_args, target=args.target, platform=args.platform
        )
        sys.stdout.write(render_dot(the_plan) if args.print_plan == "dot" else render_text(the_plan))
        return 0
    progress_mode = "quiet" if args.quiet else args.progress
    progress = make_progress(progress_mode)
    # Closed before an error is printed, so the error starts on a line of its own.
    failed = True
    try:
        result, pushed = _build_and_push(api, args, progress, context, file, buildfile_text, build_args)
        failed = False
    finally:
        if progress is not None:
            progress.close(failed=failed)
    return _finish_build(args, result, pushed)


def _build_and_push(api, args: argparse.Namespace, progress, context: Path, file, buildfile_text: str | None,
                    build_args: dict[str, str]):
    from builder.solve.mounts import parse_secret_spec

    result = api.build(
        context,
        file=file,
        buildfile_text=buildfile_text,
        tags=args.tag,
        build_args=build_args,
        labels=_parse_pairs(args.label, "--label"),
        target=args.target,
        platform=args.platform,
        outputs=list(args.output),
        root=args.root,
        on_event=progress,
        no_cache=args.no_cache,
        no_cache_filter=args.no_cache_filter,
        compression=args.compression,
        compression_level=args.compression_level,
        source_date_epoch=args.source_date_epoch,
        reproducible=args.reproducible,
        snapshotter=args.snapshotter,
        network=args.network,
        pull=args.pull,
        insecure_registries=args.insecure_registry,
        secrets=dict(parse_secret_spec(spec) for spec in args.secret),
        cache_to=args.cache_to,
        cache_from=args.cache_from,
    )
    return result, _push_tags(args, result, progress)


def _finish_build(args: argparse.Namespace, result, pushed: dict[str, str]) -> int:
    if args.explain_cache:
        for step in result.steps:
            source = f" (from {step.cache_source})" if step.cache_source not in ("", "local") else ""
            state = f"CACHED{source}" if step.cached else f"RAN ({step.cache_reason})"
            print(f"#{step.number} [{step.stage}] {step.instruction}: {state}", file=sys.stderr)
    if args.iidfile:
        _write_file(args.iidfile, result.image_id, "--iidfile")
    if args.metadata_file:
        metadata = {
            "containerimage.config.digest": result.image_id,
            "containerimage.digest": result.manifest_digest,
            # Outputs that ship a manifest (oci, registry) carry their layers compressed: their own digests.
            "outputs": {spec: digest for spec, digest in result.exported},
            "image.name": ",".join(result.tags),
            "pushed": pushed,
            "steps": [
                {"number": s.number, "stage": s.stage, "instruction": s.instruction, "cached": s.cached,
                 "seconds": round(s.seconds, 3), "cache_reason": s.cache_reason, "cache_source": s.cache_source}
                for s in result.steps
            ],
        }
        _write_file(args.metadata_file, json.dumps(metadata, indent=2) + "\n", "--metadata-file")
    if args.quiet:
        print(result.image_id)
    return 0


# What the layer compressors accept (BuildKit's documented ranges: gzip 0-9, zstd 0-22).


def _settle_print_plan(args: argparse.Namespace) -> None:
    """`build --print-plan .`: the word after --print-plan is the context unless it names a format."""
    if args.print_plan in (None, "text", "dot"):
        return
    if args.context is not None:
        raise BuildError(f"--print-plan {args.print_plan}: the plan is printed as text or dot",
                         hint="write --print-plan=dot or --print-plan=text")
    args.context, args.print_plan = args.print_plan, "text"


def _check_build_values(args: argparse.Namespace) -> None:
    """Numbers the library would only trip over deep in the build, refused up front."""
    from builder.image.oci import check_source_date_epoch

    if args.source_date_epoch is not None:
        check_source_date_epoch(args.source_date_epoch, "--source-date-epoch")


def _write_file(path: str, text: str, option: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as error:
        raise BuildError(f"cannot write {option} {path!r}: {error.strerror}", hint="name a file in a writable directory") from None


def _push_tags(args: argparse.Namespace, result, progress) -> dict[str, str]:
    """`--push`: every -t name goes to its registry (type=registry outputs push during the build),
    each a numbered item of the progress after the steps and outputs."""
    if not args.push:
        return {}
    from builder.image.store import Store
    from builder.progress import Event, EventKind, error_message
    from builder.registry import push

    store = Store.open(args.root)
    after = max(step.number for step in result.steps) + len(args.output)
    pushed = {}
    for number, name in enumerate(args.tag, start=after + 1):
        try:
            pushed[name] = push(store, name, insecure=tuple(args.insecure_registry), compression=args.compression,
                                level=args.compression_level, on_event=progress, step=number)
        except BaseException as error:
            if progress is not None:
                progress(Event(EventKind.STEP_ERROR, step=number, text=error_message(error)))
            raise
    return pushed


def build_parser(prog: str = "builder", *, only_build: bool = False) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The whole CLI; with only_build, just `build` (a build need not import the other commands)."""
    parser = argparse.ArgumentParser(prog=prog, description="Daemonless, reproducible Dockerfile-style image builder.")
    parser.add_argument("--root", default=None, help="the store directory (default: $BUILDER_ROOT, else $XDG_DATA_HOME/builder)")
    from builder import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    build_command = subparsers.add_parser("build", help="build an image from a Buildfile")
    add_build_arguments(build_command)
    build_command.add_argument("--version", action="version", version=f"build {__version__}")
    build_command.set_defaults(handler=run_build)
    for module_name in () if only_build else COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.register(subparsers)
    _accept_root_anywhere(subparsers)
    return parser, subparsers


def _accept_root_anywhere(subparsers: argparse._SubParsersAction) -> None:
    """`builder images --root DIR` as well as `builder --root DIR images`, at every level."""
    for command in set(subparsers.choices.values()):
        if "--root" not in command._option_string_actions:
            command.add_argument("--root", default=argparse.SUPPRESS, help="the store directory")
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_root_anywhere(action)


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C, so scratch dirs are removed and sandboxes killed on the way out.
        signal.signal(signal.SIGTERM, _terminate)
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser, _ = build_parser(only_build=_command_of(arguments) == "build")
    args = parser.parse_args(arguments)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        if os.geteuid() != 0:
            # Rootless: everything from here on runs as root of a user namespace (builder.userns).
            from builder.userns import enter

            enter()
        return int(args.handler(args) or 0)
    except BuildError as error:
        print(error.render(), file=sys.stderr)
        return getattr(error, "exit_code", 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:
        return 1


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM; a BaseException so no `except Exception` swallows it."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def _command_of(arguments: Sequence[str]) -> str | None:
    """The subcommand named in `arguments` (skipping the global `--root DIR`), if any."""
    index = 0
    while index < len(arguments):
        word = arguments[index]
        if word == "--root":
            index += 2
            continue
        if word.startswith("--root=") or word.startswith("-"):
            index += 1
            continue
        return word
    return None


def build_main(argv: Sequence[str] | None = None) -> int:
    """The `build` console script: `build ARGS` is `builder build ARGS`."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    return main(["build", *arguments])


if __name__ == "__main__":
    sys.exit(main())
