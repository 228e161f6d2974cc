"""Metadata instructions: they change the image config and history, never the file system."""
from __future__ import annotations

import json
import posixpath
import re
from typing import Callable

from builder.errors import BuildError, PlanError
from builder.parse import ast
from builder.solve.state import ImageState

Expand = Callable[[str], str]


def command_argv(command: ast.Command, shell: list[str]) -> list[str]:
    if isinstance(command, ast.ExecCommand):
        return list(command.argv)
    return [*shell, command.text]


def json_list(values: list[str]) -> str:
    return json.dumps(values, ensure_ascii=False)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration(text: str, instruction: ast.Instruction, flag: str) -> int:
    """Go's time.ParseDuration subset Docker accepts for HEALTHCHECK, in nanoseconds."""
    position = 0
    total = 0.0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if not match:
            raise PlanError(
                f"invalid duration {text!r} for --{flag}",
                pos=instruction.pos,
                source_line=instruction.source.splitlines()[0],
                hint="use a Go duration such as 30s, 1m30s or 500ms",
            )
        total += float(match.group(1)) * _NANOS[match.group(2)]
        position = match.end()
    if not text:
        raise PlanError(f"empty duration for --{flag}", pos=instruction.pos, hint="use a duration such as 30s")
    return int(total)


def _expose_ports(word: str, instruction: ast.Instruction) -> list[str]:
    port, _, protocol = word.partition("/")
    protocol = (protocol or "tcp").lower()
    if "-" in port:
        low, _, high = port.partition("-")
        if low.isascii() and low.isdigit() and high.isascii() and high.isdigit():
            # A range expands to one entry per port: bound it by the port space (Docker's
            # "invalid range specified for port"), so `EXPOSE 1-99999999` is not 10^8 strings.
            if len(low) > 5 or len(high) > 5 or int(high) > 65535:
                raise PlanError(
                    f"invalid port range {port!r}", pos=instruction.pos,
                    source_line=instruction.source.splitlines()[0], hint="ports go from 0 to 65535",
                )
            if int(low) <= int(high):
                return [f"{number}/{protocol}" for number in range(int(low), int(high) + 1)]
    return [f"{port}/{protocol}"]


def apply_metadata(
    instruction: ast.Instruction, state: ImageState, expand: Expand, *, cmd_set_in_stage: list[bool]
) -> str:
    """Apply one metadata instruction to `state`; returns the history `created_by` text."""
    config = state.config
    if isinstance(instruction, ast.Env):
        pairs = [(expand(name), expand(value)) for name, value in instruction.pairs]
        for name, value in pairs:
            state.set_env(name, value)
        return "ENV " + " ".join(f"{name}={value}" for name, value in pairs)
    if isinstance(instruction, ast.Label):
        pairs = [(expand(name), expand(value)) for name, value in instruction.pairs]
        labels = dict(config.get("Labels") or {})
        labels.update(pairs)
        config["Labels"] = labels
        return "LABEL " + " ".join(f"{name}={value}" for name, value in pairs)
    if isinstance(instruction, ast.Maintainer):
        state.author = instruction.name
        return f"MAINTAINER {instruction.name}"
    if isinstance(instruction, ast.Cmd):
        argv = command_argv(instruction.command, state.shell())
        config["Cmd"] = argv
        cmd_set_in_stage[0] = True
        return f"CMD {json_list(argv)}"
    if isinstance(instruction, ast.Entrypoint):
        argv = command_argv(instruction.command, state.shell())
        config["Entrypoint"] = argv
        if not cmd_set_in_stage[0]:
            # Docker: a CMD inherited from the base does not survive a new ENTRYPOINT.
            config.pop("Cmd", None)
        return f"ENTRYPOINT {json_list(argv)}"
    if isinstance(instruction, ast.Expose):
        ports = dict(config.get("ExposedPorts") or {})
        words = [expand(word) for word in instruction.ports]
        for word in words:
            for port in _expose_ports(word, instruction):
                ports[port] = {}
        config["ExposedPorts"] = ports
        return "EXPOSE map[" + " ".join(f"{port}:{{}}" for port in sorted(ports)) + "]"
    if isinstance(instruction, ast.User):
        config["User"] = expand(instruction.user)
        return f"USER {config['User']}"
    if isinstance(instruction, ast.Workdir):
        path = expand(instruction.path)
        if not path:
            raise PlanError("WORKDIR needs a path", pos=instruction.pos, hint="e.g. WORKDIR /app")
        joined = posixpath.normpath(posixpath.join(state.workdir(), path))
        config["WorkingDir"] = "/" + joined.lstrip("/") if joined != "/" else "/"
        return f"WORKDIR {config['WorkingDir']}"
    if isinstance(instruction, ast.Volume):
        volumes = dict(config.get("Volumes") or {})
        paths = [expand(path) for path in instruction.paths]
        for path in paths:
            if not path:
                raise PlanError("VOLUME with an empty path", pos=instruction.pos, hint="name a path")
            volumes[path] = {}
        config["Volumes"] = volumes
        return f"VOLUME {json_list(paths)}"
    if isinstance(instruction, ast.Stopsignal):
        config["StopSignal"] = expand(instruction.signal)
        return f"STOPSIGNAL {config['StopSignal']}"
    if isinstance(instruction, ast.Healthcheck):
        if instruction.command is None:
            config["Healthcheck"] = {"Test": ["NONE"]}
            return "HEALTHCHECK NONE"
        if isinstance(instruction.command, ast.ExecCommand):
            test = ["CMD", *instruction.command.argv]
        else:
            test = ["CMD-SHELL", instruction.command.text]
        check: dict[str, object] = {"Test": test}
        for attribute, key in (
            ("interval", "Interval"),
            ("timeout", "Timeout"),
            ("start_period", "StartPeriod"),
            ("start_interval", "StartInterval"),
        ):
            raw = getattr(instruction, attribute)
            if raw is not None:
                check[key] = parse_duration(raw, instruction, attribute.replace("_", "-"))
        if instruction.retries is not None:
            check["Retries"] = instruction.retries
        config["Healthcheck"] = check
        return f"HEALTHCHECK &{{{json_list(test)}}}"
    if isinstance(instruction, ast.Shell):
        config["Shell"] = list(instruction.argv)
        return f"SHELL {json_list(list(instruction.argv))}"
    if isinstance(instruction, ast.Onbuild):
        trigger_text = _onbuild_text(instruction)
        config["OnBuild"] = [*(config.get("OnBuild") or []), trigger_text]
        return f"ONBUILD {trigger_text}"
    raise BuildError(f"{instruction.keyword} is not a metadata instruction", pos=instruction.pos)


def _onbuild_text(instruction: ast.Onbuild) -> str:
    source = " ".join(line.strip() for line in instruction.source.splitlines())
    keyword_end = source.lower().find("onbuild") + len("onbuild")
    return source[keyword_end:].strip()
