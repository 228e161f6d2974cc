"""Metadata instructions: they change the image config and history, never the file system
(WORKDIR's directory is made by workdirstep.py, on top of the change described here).

Each instruction becomes a `ConfigChange` when it is prepared (after expansion, against the state
before it). The change is part of the step's cache key and is applied the same way whether the
step came from the cache or not; it is small (what the instruction says, not the whole config),
so applying it costs the same however large the image's config already is.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from builder.context.dockerignore import go_clean
from builder.errors import BuildError, PlanError
from builder.parse import ast
from builder.parse.ports import PortSpecError, parse_port_spec
from builder.solve.state import ImageState

Expand = Callable[[str], str]


def command_argv(command: ast.Command, shell: list[str]) -> list[str]:
    if isinstance(command, ast.ExecCommand):
        return list(command.argv)
    return [*shell, command.text]


def json_list(values: list[str]) -> str:
    return json.dumps(values, ensure_ascii=False)


@dataclass(frozen=True)
class ConfigChange:
    """What one metadata instruction does to the image config, in JSON-able parts."""

    set: dict[str, Any] = field(default_factory=dict)  # config keys replaced
    unset: tuple[str, ...] = ()  # config keys removed
    env: tuple[tuple[str, str], ...] = ()  # ENV assignments, in order
    merge: dict[str, dict[str, Any]] = field(default_factory=dict)  # Labels / ExposedPorts / Volumes entries
    append: dict[str, tuple[str, ...]] = field(default_factory=dict)  # OnBuild triggers
    author: str | None = None
    sets_cmd: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name in ("set", "unset", "env", "merge", "append", "author", "sets_cmd"):
            value = getattr(self, name)
            if value:
                data[name] = value
        return data

    def apply(self, state: ImageState) -> None:
        config = state.config
        for name, value in self.env:
            state.set_env(name, value)
        for key in self.unset:
            config.pop(key, None)
        config.update(self.set)
        for key, entries in self.merge.items():
            config[key] = {**(config.get(key) or {}), **entries}
        for key, items in self.append.items():
            config[key] = [*(config.get(key) or []), *items]
        if self.author is not None:
            state.author = self.author
        if self.sets_cmd:
            state.cmd_set_in_stage = True


def _expose_ports(word: str, instruction: ast.Instruction) -> list[str]:
    try:
        return parse_port_spec(word).entries()
    except PortSpecError as error:
        raise PlanError(str(error), pos=instruction.pos, source_line=instruction.source.splitlines()[0],
                        hint="write EXPOSE PORT, PORT/tcp|udp|sctp or LOW-HIGH/PROTO, ports from 0 to 65535") from None


Described = tuple[str, ConfigChange]  # (history created_by, change)


def _env(instruction: ast.Env, state: ImageState, expand: Expand) -> Described:
    pairs = tuple((expand(name), expand(value)) for name, value in instruction.pairs)
    return "ENV " + " ".join(f"{name}={value}" for name, value in pairs), ConfigChange(env=pairs)


def _label(instruction: ast.Label, state: ImageState, expand: Expand) -> Described:
    pairs = [(expand(name), expand(value)) for name, value in instruction.pairs]
    text = "LABEL " + " ".join(f"{name}={value}" for name, value in pairs)
    return text, ConfigChange(merge={"Labels": dict(pairs)})


def _maintainer(instruction: ast.Maintainer, state: ImageState, expand: Expand) -> Described:
    return f"MAINTAINER {instruction.name}", ConfigChange(author=instruction.name)


def _cmd(instruction: ast.Cmd, state: ImageState, expand: Expand) -> Described:
    argv = command_argv(instruction.command, state.shell())
    # BuildKit marks every CMD's arguments as escaped (a Windows-only meaning, kept in the config
    # for Docker's image spec); images built both ways compare equal only with it.
    return f"CMD {json_list(argv)}", ConfigChange(set={"Cmd": argv, "ArgsEscaped": True}, sets_cmd=True)


def _entrypoint(instruction: ast.Entrypoint, state: ImageState, expand: Expand) -> Described:
    argv = command_argv(instruction.command, state.shell())
    # Docker: a CMD inherited from the base does not survive a new ENTRYPOINT.
    unset = () if state.cmd_set_in_stage else ("Cmd",)
    return f"ENTRYPOINT {json_list(argv)}", ConfigChange(set={"Entrypoint": argv}, unset=unset)


def _expose(instruction: ast.Expose, state: ImageState, expand: Expand) -> Described:
    added: dict[str, dict[str, Any]] = {port: {} for word in instruction.ports for port in _expose_ports(expand(word), instruction)}
    shown = sorted({**(state.config.get("ExposedPorts") or {}), **added})
    text = "EXPOSE map[" + " ".join(f"{port}:{{}}" for port in shown) + "]"
    return text, ConfigChange(merge={"ExposedPorts": added})


def _user(instruction: ast.User, state: ImageState, expand: Expand) -> Described:
    user = expand(instruction.user)
    return f"USER {user}", ConfigChange(set={"User": user})


def workdir_path(current: str, requested: str) -> str:
    """BuildKit's working directory rule (NormalizeWorkdir, Linux): an absolute path is kept as
    written (`/tmp/` stays `/tmp/`), a relative one is joined to the current one and cleaned, an
    empty one (a variable that expanded to nothing) keeps the current one."""
    parent = current or "/"
    if not parent.startswith("/"):
        parent = go_clean("/" + parent)
    if not requested:
        requested = parent
    if requested.startswith("/"):
        return requested
    return go_clean(parent + "/" + requested)


def _workdir(instruction: ast.Workdir, state: ImageState, expand: Expand) -> Described:
    workdir = workdir_path(state.workdir(), expand(instruction.path))
    return f"WORKDIR {workdir}", ConfigChange(set={"WorkingDir": workdir})


def _volume(instruction: ast.Volume, state: ImageState, expand: Expand) -> Described:
    paths = [expand(path) for path in instruction.paths]
    if any(not path for path in paths):
        raise PlanError("VOLUME with an empty path", pos=instruction.pos, hint="name a path")
    return f"VOLUME {json_list(paths)}", ConfigChange(merge={"Volumes": {path: {} for path in paths}})


def _stopsignal(instruction: ast.Stopsignal, state: ImageState, expand: Expand) -> Described:
    signal = expand(instruction.signal)
    return f"STOPSIGNAL {signal}", ConfigChange(set={"StopSignal": signal})


def _healthcheck(instruction: ast.Healthcheck, state: ImageState, expand: Expand) -> Described:
    if instruction.command is None:
        return "HEALTHCHECK NONE", ConfigChange(set={"Healthcheck": {"Test": ["NONE"]}})
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
        nanos = getattr(instruction, attribute)
        if nanos:  # 0 means "the default": left out, as Docker's omitempty does
            check[key] = nanos
    if instruction.retries:
        check["Retries"] = instruction.retries
    return f"HEALTHCHECK &{{{json_list(test)}}}", ConfigChange(set={"Healthcheck": check})


def _shell(instruction: ast.Shell, state: ImageState, expand: Expand) -> Described:
    return f"SHELL {json_list(list(instruction.argv))}", ConfigChange(set={"Shell": list(instruction.argv)})


def _onbuild(instruction: ast.Onbuild, state: ImageState, expand: Expand) -> Described:
    trigger = onbuild_text(instruction)
    return f"ONBUILD {trigger}", ConfigChange(append={"OnBuild": (trigger,)})


def onbuild_text(instruction: ast.Onbuild) -> str:
    source = " ".join(line.strip() for line in instruction.source.splitlines())
    keyword_end = source.lower().find("onbuild") + len("onbuild")
    return source[keyword_end:].strip()


DESCRIBERS: dict[type, Callable[[Any, ImageState, Expand], Described]] = {
    ast.Env: _env,
    ast.Label: _label,
    ast.Maintainer: _maintainer,
    ast.Cmd: _cmd,
    ast.Entrypoint: _entrypoint,
    ast.Expose: _expose,
    ast.User: _user,
    ast.Workdir: _workdir,
    ast.Volume: _volume,
    ast.Stopsignal: _stopsignal,
    ast.Healthcheck: _healthcheck,
    ast.Shell: _shell,
    ast.Onbuild: _onbuild,
}


def describe(instruction: ast.Instruction, state: ImageState, expand: Expand) -> Described:
    """The history text and config change of a metadata instruction, against `state`."""
    describer = DESCRIBERS.get(type(instruction))
    if describer is None:
        raise BuildError(f"{instruction.keyword} is not a metadata instruction", pos=instruction.pos)
    return describer(instruction, state, expand)
