"""`builder unshare [COMMAND...]`: run a command in the user namespace rootless builds use.

Run by an ordinary user, the builder works as root of a user namespace (builder.userns), so its
store holds files owned by the user's subordinate ids, which the user cannot change or delete
outside it: `builder unshare rm -rf ~/.local/share/builder` removes a store, `builder unshare`
alone opens a shell in there (as `podman unshare` and `buildah unshare` do). For root it just
runs the command.
"""
from __future__ import annotations

import argparse
import os
import shutil

from builder.errors import BuildError


def _run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    command = command or [os.environ.get("SHELL") or "/bin/sh"]
    program = command[0] if "/" in command[0] else shutil.which(command[0])
    if program is None:
        raise BuildError(f"cannot run {command[0]!r}: not found on PATH",
                         hint="give a program on PATH or its path, e.g. builder unshare rm -rf DIR")
    try:
        os.execv(program, command)
    except OSError as exc:
        raise BuildError(f"cannot run {command[0]!r}: {exc.strerror}",
                         hint="give a program on PATH, e.g. builder unshare rm -rf DIR") from exc
    return 0  # not reached: exec replaced us


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "unshare", help="run a command (default: a shell) in the user namespace of rootless builds")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
    parser.set_defaults(handler=_run)
