"""The Buildfile AST: what the parser produces and the planner consumes.

Values are kept *unexpanded* (raw words, quotes intact) because the variables in effect change
from instruction to instruction; `builder.parse.expand` turns a raw word into its final string
with the environment of the step that uses it. Continuation lines are already joined.
"""
from __future__ import annotations

from dataclasses import Field, FrozenInstanceError, dataclass, field, fields
from typing import Any, ClassVar, TypeVar, dataclass_transform

from builder.errors import Pos


class Node:
    """Immutable, compared and hashed by its fields, as `dataclass(frozen=True)` would make it.

    The methods live here once: a frozen dataclass generates six of them per class, which made
    importing this module (every build's start-up) cost 16 ms instead of 3."""

    # Every subclass is made a dataclass by `node`; declared so `fields(self)` type-checks here.
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sealed", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_sealed", False):
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _values(self) -> tuple:
        return tuple(getattr(self, item.name) for item in fields(self))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{item.name}={getattr(self, item.name)!r}" for item in fields(self))
        return f"{type(self).__name__}({shown})"


_N = TypeVar("_N", bound=Node)
_generate_init = dataclass(eq=False, repr=False)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def node(cls: type[_N]) -> type[_N]:
    """Make `cls` a dataclass that generates only `__init__`, keeping Node's shared methods.

    Declared as a dataclass transform so type checkers see the generated `__init__` and the
    frozen-ness that Node's `__setattr__` enforces at run time."""
    return _generate_init(cls)


@node
class Flag(Node):
    """`--name=value` before an instruction's arguments; value None for a bare `--name`."""

    name: str
    value: str | None
    pos: Pos


@node
class Heredoc(Node):
    """One `<<EOF ... EOF` body attached to RUN, COPY or ADD."""

    delimiter: str
    content: str
    expand: bool  # False when the delimiter was quoted ('EOF' or "EOF")
    strip_tabs: bool  # True for <<-EOF; content already has leading tabs removed


@node
class ShellCommand(Node):
    """Shell form: the raw text handed to SHELL (default `/bin/sh -c`)."""

    text: str


@node
class ExecCommand(Node):
    """Exec form: a JSON list of strings, run without a shell."""

    argv: tuple[str, ...]


Command = ShellCommand | ExecCommand


@node
class Mount(Node):
    """One `RUN --mount=type=...,k=v,...`; options keep raw strings by key."""

    type: str  # bind, cache, tmpfs, secret, ssh
    options: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str | None = None) -> str | None:
        for name, value in self.options:
            if name == key:
                return value
        return default


@node
class Instruction(Node):
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


@node
class From(Instruction):
    """`FROM image [AS name]`: starts a stage."""

    image: str  # raw word, may hold $VARS (expanded with pre-FROM ARGs only)
    platform: str | None = None
    alias: str | None = None  # `AS name`, lower-cased as Docker does


@node
class Run(Instruction):
    """`RUN`: a command run in the stage's filesystem; what it changes is a layer."""

    command: Command
    heredocs: tuple[Heredoc, ...] = ()
    mounts: tuple[Mount, ...] = ()
    network: str | None = None  # default | none | host
    security: str | None = None  # sandbox | insecure


@node
class Cmd(Instruction):
    """`CMD`: the default command (or ENTRYPOINT's default arguments)."""

    command: Command


@node
class Entrypoint(Instruction):
    """`ENTRYPOINT`: the command every container runs."""

    command: Command


@node
class Label(Instruction):
    """`LABEL k=v ...`: config labels."""

    pairs: tuple[tuple[str, str], ...]  # raw key and value words


@node
class Maintainer(Instruction):
    """`MAINTAINER name` (deprecated): the config's author."""

    name: str


@node
class Expose(Instruction):
    """`EXPOSE port[/proto] ...`: ExposedPorts in the config."""

    ports: tuple[str, ...]  # raw words like 80, 80/tcp, $PORT/udp


@node
class Env(Instruction):
    """`ENV k=v ...`: environment for later steps and the image."""

    pairs: tuple[tuple[str, str], ...]  # raw key and value words, legacy `ENV k v` included


@node
class Add(Instruction):
    """`ADD`: COPY plus URLs, git sources and unpacking of local tar archives."""

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


@node
class Copy(Instruction):
    """`COPY`: files from the context, another stage or an image."""

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


@node
class Volume(Instruction):
    """`VOLUME path ...`: Volumes in the config."""

    paths: tuple[str, ...]


@node
class User(Instruction):
    """`USER user[:group]`: who RUN steps and containers run as."""

    user: str  # raw: name, uid, name:group, uid:gid


@node
class Workdir(Instruction):
    """`WORKDIR path`: the working directory, made if missing."""

    path: str


@node
class Arg(Instruction):
    """`ARG name[=default] ...`: build arguments in scope from here on."""

    args: tuple[tuple[str, str | None], ...]  # (name, raw default or None)


@node
class Onbuild(Instruction):
    """`ONBUILD instruction`: a trigger stored in the config for images built FROM this one."""

    trigger: Instruction  # never FROM, MAINTAINER or ONBUILD


@node
class Stopsignal(Instruction):
    """`STOPSIGNAL signal`: how a container is asked to stop."""

    signal: str


@node
class Healthcheck(Instruction):
    """`HEALTHCHECK [options] CMD ...` or `HEALTHCHECK NONE`."""

    command: Command | None  # None for HEALTHCHECK NONE
    # Durations in nanoseconds, as the image config stores them (the Go durations parsed once, here).
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None


@node
class Shell(Instruction):
    """`SHELL ["exe", "arg"]`: the shell that runs shell-form commands."""

    argv: tuple[str, ...]


@node
class Buildfile(Node):
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
