"""The Buildfile AST: what the parser produces and the planner consumes.

Values are kept *unexpanded* (raw words, quotes intact) because the variables in effect change
from instruction to instruction; `builder.parse.expand` turns a raw word into its final string
with the environment of the step that uses it. Continuation lines are already joined.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from builder.errors import Pos


@dataclass(frozen=True)
class Flag:
    """`--name=value` before an instruction's arguments; value None for a bare `--name`."""

    name: str
    value: str | None
    pos: Pos


@dataclass(frozen=True)
class Heredoc:
    """One `<<EOF ... EOF` body attached to RUN, COPY or ADD."""

    delimiter: str
    content: str
    expand: bool  # False when the delimiter was quoted ('EOF' or "EOF")
    strip_tabs: bool  # True for <<-EOF; content already has leading tabs removed


@dataclass(frozen=True)
class ShellCommand:
    """Shell form: the raw text handed to SHELL (default `/bin/sh -c`)."""

    text: str


@dataclass(frozen=True)
class ExecCommand:
    """Exec form: a JSON list of strings, run without a shell."""

    argv: tuple[str, ...]


Command = ShellCommand | ExecCommand


@dataclass(frozen=True)
class Mount:
    """One `RUN --mount=type=...,k=v,...`; options keep raw strings by key."""

    type: str  # bind, cache, tmpfs, secret, ssh
    options: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str | None = None) -> str | None:
        for name, value in self.options:
            if name == key:
                return value
        return default


@dataclass(frozen=True)
class Instruction:
    """Common part of every instruction."""

    pos: Pos  # where the keyword starts
    source: str  # the instruction's original text, continuation lines included
    flags: tuple[Flag, ...]

    @property
    def keyword(self) -> str:
        return type(self).__name__.upper()

    def flag(self, name: str) -> Flag | None:
        for candidate in self.flags:
            if candidate.name == name:
                return candidate
        return None


@dataclass(frozen=True)
class From(Instruction):
    image: str  # raw word, may hold $VARS (expanded with pre-FROM ARGs only)
    platform: str | None = None
    alias: str | None = None  # `AS name`, lower-cased as Docker does


@dataclass(frozen=True)
class Run(Instruction):
    command: Command
    heredocs: tuple[Heredoc, ...] = ()
    mounts: tuple[Mount, ...] = ()
    network: str | None = None  # default | none | host
    security: str | None = None  # sandbox | insecure


@dataclass(frozen=True)
class Cmd(Instruction):
    command: Command


@dataclass(frozen=True)
class Entrypoint(Instruction):
    command: Command


@dataclass(frozen=True)
class Label(Instruction):
    pairs: tuple[tuple[str, str], ...]  # raw key and value words


@dataclass(frozen=True)
class Maintainer(Instruction):
    name: str


@dataclass(frozen=True)
class Expose(Instruction):
    ports: tuple[str, ...]  # raw words like 80, 80/tcp, $PORT/udp


@dataclass(frozen=True)
class Env(Instruction):
    pairs: tuple[tuple[str, str], ...]  # raw key and value words, legacy `ENV k v` included


@dataclass(frozen=True)
class Add(Instruction):
    sources: tuple[str, ...]  # raw words; heredoc sources appear as their `<<NAME` word
    dest: str
    heredocs: tuple[Heredoc, ...] = ()
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    keep_git_dir: bool = False
    checksum: str | None = None
    exclude: tuple[str, ...] = ()
    json_form: bool = False


@dataclass(frozen=True)
class Copy(Instruction):
    sources: tuple[str, ...]
    dest: str
    heredocs: tuple[Heredoc, ...] = ()
    from_: str | None = None  # --from: stage name, stage index or image reference
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    exclude: tuple[str, ...] = ()
    json_form: bool = False


@dataclass(frozen=True)
class Volume(Instruction):
    paths: tuple[str, ...]


@dataclass(frozen=True)
class User(Instruction):
    user: str  # raw: name, uid, name:group, uid:gid


@dataclass(frozen=True)
class Workdir(Instruction):
    path: str


@dataclass(frozen=True)
class Arg(Instruction):
    args: tuple[tuple[str, str | None], ...]  # (name, raw default or None)


@dataclass(frozen=True)
class Onbuild(Instruction):
    trigger: Instruction  # never FROM, MAINTAINER or ONBUILD


@dataclass(frozen=True)
class Stopsignal(Instruction):
    signal: str


@dataclass(frozen=True)
class Healthcheck(Instruction):
    command: Command | None  # None for HEALTHCHECK NONE
    # Durations in nanoseconds, as the image config stores them (the Go durations parsed once, here).
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None


@dataclass(frozen=True)
class Shell(Instruction):
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Buildfile:
    """A whole parsed file."""

    path: str
    escape: str  # "\\" or "`"
    directives: tuple[tuple[str, str], ...]  # (name lower-cased, value) in file order
    instructions: tuple[Instruction, ...] = field(default_factory=tuple)
    # ARG instructions before the first FROM (also present in `instructions`)
    @property
    def global_args(self) -> tuple[Arg, ...]:
        found: list[Arg] = []
        for instruction in self.instructions:
            if isinstance(instruction, From):
                break
            if isinstance(instruction, Arg):
                found.append(instruction)
        return tuple(found)
