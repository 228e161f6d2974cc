"""`builder run [--rm] [--network default|host|none] [--user U] [-e K=V] [-w DIR] IMAGE [CMD...]`.

Runs a command in a throwaway container of a stored image, like `docker run`: the image's
ENTRYPOINT, CMD, ENV, WORKDIR and USER apply, flags override them. Nothing is written to the
store: the container's changes are dropped when it exits.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Callable, Sequence

from builder.errors import BuildError, SandboxError
from builder.image.store import Store
from builder.sandbox import run as sandbox_run
from builder.snapshot import prepare


def image_argv(config: dict, command: Sequence[str], entrypoint: Sequence[str] | None) -> list[str]:
    """docker run's rule: ENTRYPOINT + (CMD from the command line, else the image's CMD); a new
    --entrypoint drops the image's CMD."""
    image_entrypoint = list(config.get("Entrypoint") or [])
    image_cmd = list(config.get("Cmd") or [])
    if entrypoint is not None:
        return list(entrypoint) + list(command)
    return image_entrypoint + (list(command) if command else image_cmd)


def image_env(config: dict, overrides: Sequence[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        name, _, value = item.partition("=")
        env[name] = value
    for name, value in overrides:
        env[name] = value
    return env


def run_image(
    store: Store,
    ref: str,
    argv: Sequence[str] = (),
    *,
    env: Sequence[tuple[str, str]] = (),
    workdir: str | None = None,
    user: str | None = None,
    network: str = "default",
    entrypoint: Sequence[str] | None = None,
    hostname: str | None = None,
    snapshotter: str = "auto",
    on_output: Callable[[bytes], None] | None = None,
    stdin: int | IO[bytes] | None = None,
) -> int:
    """Run a container of image `ref` and return its exit status; writes no layer."""
    record = store.load_image(ref)
    config = (record.config.get("config") or {}) if isinstance(record.config, dict) else {}
    command = image_argv(config, argv, entrypoint)
    if not command:
        raise SandboxError(f"no command to run in {ref}",
                           hint="give a command after the image name, or set CMD/ENTRYPOINT in the image")
    layer_dirs = store.snapshot_dirs(record.manifest_digest)
    full_env = image_env(config, env)
    chosen_user = user if user is not None else (config.get("User") or None)
    chosen_workdir = workdir or config.get("WorkingDir") or "/"
    with store.tempdir(prefix="run-") as scratch:
        snapshot = prepare(layer_dirs, scratch / "w", kind=snapshotter)
        try:
            full_env.setdefault("HOSTNAME", hostname or record.short_id)
            return sandbox_run(
                snapshot,
                command,
                env=full_env,
                workdir=chosen_workdir,
                user=chosen_user,
                network=network,
                hostname=hostname or record.short_id,
                on_output=on_output,
                stdin=stdin,
            )
        finally:
            snapshot.cleanup()


def _env_item(text: str) -> tuple[str, str | None]:
    name, sep, value = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"-e {text!r} needs a name: NAME=VALUE")
    if not sep:
        # docker run -e NAME passes the caller's value, and nothing if the caller has none.
        return name, os.environ.get(name)
    return name, value


def handler(args: argparse.Namespace) -> int:
    if args.tty and not (sys.stdout.isatty() and (not args.interactive or sys.stdin.isatty())):
        raise SandboxError("the input device is not a TTY" if args.interactive else "the output device is not a TTY",
                           hint="drop -t when piping input or output (docker run says the same)")
    store = Store.open(args.root)
    entrypoint = None
    if args.entrypoint is not None:
        entrypoint = [args.entrypoint] if args.entrypoint else []
    try:
        return run_image(
            store,
            args.image,
            args.command,
            env=[(name, value) for name, value in args.env if value is not None],
            workdir=args.workdir,
            user=args.user,
            network=args.network,
            entrypoint=entrypoint,
            hostname=args.hostname,
            snapshotter=args.snapshotter,
            stdin=sys.stdin.buffer if args.interactive else None,
        )
    except SandboxError as error:
        # docker run's codes: the command's 126/127 when it cannot start, 125 for the rest.
        error.exit_code = error.command_status or 125
        raise
    except BuildError:
        raise
    except OSError as exc:
        raise SandboxError(f"cannot run {args.image}: {exc}") from exc


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run a command in a throwaway container of an image")
    parser.add_argument("--rm", action="store_true", help="accepted for docker compatibility (always removed)")
    parser.add_argument("--network", default="default", choices=["default", "host", "none"],
                        help="default: private, outbound through slirp4netns (as docker run's bridge); host; none")
    parser.add_argument("-u", "--user", help="user[:group] or uid[:gid] to run as")
    parser.add_argument("-e", "--env", action="append", default=[], type=_env_item, metavar="NAME=VALUE",
                        help="set an environment variable (NAME alone passes the caller's value)")
    parser.add_argument("-w", "--workdir", help="working directory inside the container")
    parser.add_argument("--entrypoint", help="override the image's ENTRYPOINT ('' clears it)")
    parser.add_argument("--hostname", help="the container's host name")
    parser.add_argument("-i", "--interactive", action="store_true", help="pass standard input to the command")
    parser.add_argument("-t", "--tty", action="store_true",
                        help="the command runs on this terminal (standard input and output must be one; no new pty is made)")
    parser.add_argument("--snapshotter", default="auto", choices=["auto", "overlay", "copy"],
                        help="how the container gets its file system")
    parser.add_argument("--root", default=argparse.SUPPRESS, help="the store directory")
    parser.add_argument("image", help="image name, tag or digest")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments (default: the image's CMD)")
    parser.set_defaults(handler=handler)


__all__ = ["handler", "image_argv", "image_env", "register", "run_image"]
