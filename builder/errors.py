"""Typed errors shown to users as `file:line:col: message`, the offending line, a caret, a hint.

Every mistake a user can make (syntax, unknown stage, missing file, failed RUN, bad archive,
bad registry reply) is raised as a BuildError subclass; the CLI renders it and exits non-zero
without a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pos:
    """A place in a Buildfile; line and column are 1-based."""

    file: str
    line: int
    column: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class BuildError(Exception):
    """Base of every error a user should see as a message, not a traceback."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        pos: Pos | None = None,
        hint: str | None = None,
        source_line: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.hint = hint
        self.source_line = source_line

    def render(self) -> str:
        """The text the CLI prints: location, message, the line with a caret, then the hint."""
        head = f"{self.pos}: {self.message}" if self.pos else f"error: {self.message}"
        lines = [head]
        if self.pos and self.source_line is not None:
            number = str(self.pos.line)
            lines.append(f" {number} | {self.source_line.rstrip()}")
            caret_pad = " " * max(self.pos.column - 1, 0)
            lines.append(f" {' ' * len(number)} | {caret_pad}^")
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


class ParseError(BuildError):
    """The Buildfile's text is not valid: syntax, unknown instruction, bad flag, bad directive."""


class ExpansionError(BuildError):
    """A variable substitution failed, e.g. `${VAR:?message}` with VAR unset."""


class PlanError(BuildError):
    """The Buildfile parses but cannot be planned: unknown stage, cycle, bad target."""


class ContextError(BuildError):
    """A source is missing from the build context or would reach outside it."""


class ArchiveError(BuildError):
    """A tar archive (layer, ADD source, docker-archive, OCI archive) is malformed or hostile."""


class RunError(BuildError):
    """A RUN step's command failed; carries its exit code."""

    def __init__(self, message: str, *, exit_status: int, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.exit_status = exit_status


class SandboxError(BuildError):
    """The sandbox could not be set up (namespaces, mounts, missing shell in the image)."""

    command_status: int | None = None  # 126/127 when the command itself could not be started


class StoreError(BuildError):
    """The local store is unusable or an entry in it is corrupt."""


class ImageNotFound(BuildError):
    """A named image or digest is not in the store (and could not be pulled)."""


class RegistryError(BuildError):
    """A registry answered with an error, a wrong digest or something unreadable."""


class OutputError(BuildError):
    """An `--output` specification is invalid or its destination cannot be written."""


class CacheError(BuildError):
    """A `--cache-to`/`--cache-from` specification is invalid (a cache that cannot be read or
    written is a warning, never this)."""


class InvalidArgument(BuildError):
    """A library caller passed an argument of the wrong type or shape to `builder.build`."""


class BuildCancelled(BuildError):
    """The build was cancelled through its `Cancellation` handle."""

    exit_code = 130
