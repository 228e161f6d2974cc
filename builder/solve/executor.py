"""How a RUN step's command is run: in a snapshot of its parent layers, inside the sandbox.

The solver only needs "run this command over these layers and give me the diff"; this module is
that one seam, so the scheduler and the cache can be tested with a fake executor and no root.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from builder.sandbox.runner import ExtraMount, SandboxGroup


@dataclass(frozen=True)
class RunSpec:
    """One command to run over a stack of layer dirs (lowest first)."""

    argv: list[str]
    env: dict[str, str]
    workdir: str
    user: str | None
    network: str
    lower_dirs: list[Path]
    binds: Sequence["ExtraMount"] = field(default_factory=tuple)  # the step's --mounts, in order


@dataclass(frozen=True)
class RunOutcome:
    """How a RUN ended."""

    status: int  # the command's exit status (128+N when killed by signal N)
    diff_dir: Path | None  # the layer dir of what it changed; None unless status is 0


class Executor(Protocol):
    def run(self, spec: RunSpec, work: Path, on_output: Callable[[bytes], None]) -> RunOutcome:
        """Run `spec` using the empty dir `work` for scratch space."""
        ...

    def stop_all(self) -> None:
        """Stop every command this executor is running now (a failed or cancelled build)."""
        ...


# BuildKit's sandbox hostname: a RUN that records `hostname` gets what it would under BuildKit.
BUILD_HOSTNAME = "buildkitsandbox"


class SandboxExecutor:
    """The real thing: an overlay (or copy) snapshot and the namespaced sandbox, with the /etc
    files and hostname a RUN step gets under BuildKit."""

    def __init__(self, snapshotter: str = "auto") -> None:
        self.snapshotter = snapshotter
        # One per build: a failure or a cancel stops this build's sandboxes, never another's.
        # Made by the first RUN, so a build that runs nothing never loads the sandbox code.
        self._sandboxes: SandboxGroup | None = None
        self._sandboxes_lock = threading.Lock()

    @property
    def sandboxes(self) -> SandboxGroup:
        with self._sandboxes_lock:
            if self._sandboxes is None:
                from builder.sandbox.runner import SandboxGroup

                self._sandboxes = SandboxGroup()
            return self._sandboxes

    def stop_all(self) -> None:
        with self._sandboxes_lock:
            started = self._sandboxes
        if started is not None:
            started.kill()

    def run(self, spec: RunSpec, work: Path, on_output: Callable[[bytes], None]) -> RunOutcome:
        from builder.sandbox import BUILDKIT_RUN_ETC
        from builder.sandbox import run as sandbox_run
        from builder.snapshot import prepare

        snapshot = prepare(spec.lower_dirs, work / "w", kind=self.snapshotter)
        try:
            status = sandbox_run(
                snapshot,
                spec.argv,
                env=spec.env,
                workdir=spec.workdir,
                user=spec.user,
                network=spec.network,
                hostname=BUILD_HOSTNAME,
                on_output=on_output,
                extra_binds=spec.binds,
                group=self.sandboxes,
                etc=BUILDKIT_RUN_ETC,
            )
            if status != 0:
                return RunOutcome(status, None)
            diff_dir = work / "diff"
            snapshot.diff(diff_dir)
            return RunOutcome(0, diff_dir)
        finally:
            snapshot.cleanup()
