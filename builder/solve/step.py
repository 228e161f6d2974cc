"""The prepared-step protocol: every instruction, once expanded against the state before it,
becomes one object that carries both its cache-key components and how to produce its result
(as BuildKit's ops carry their CacheMap and Exec together).

The solver computes the key from `components`, and then either takes the result from the cache
or calls `execute`; either way it calls `apply` so the config and variables move on. It never
looks at instruction types.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from builder.parse import ast
from builder.solve.state import ImageState, LayerRef

if TYPE_CHECKING:
    from builder.plan.planner import Stage
    from builder.solve.session import BuildSession

Expand = Callable[[str], str]


@dataclass
class StepInput:
    """What preparing a step may consult: the build, the stage, the state before the step."""

    session: "BuildSession"
    stage: "Stage"
    state: ImageState
    instruction: ast.Instruction
    expand: Expand
    number: int = 0  # the step's number in the build, for its progress events

    @property
    def source_line(self) -> str:
        return self.instruction.source.splitlines()[0] if self.instruction.source else ""


class PreparedStep:
    """One instruction, ready to be keyed and run. Subclasses set the two attributes."""

    created_by: str  # the history entry's text
    components: dict[str, Any]  # what the cache key is made of (JSON-able)
    # False for steps that only change the config: the solver then skips the work dir, the
    # cross-build step lock and the immediate cache write that real work is worth.
    makes_layer: bool = False

    def execute(self, work: Path) -> LayerRef | None:
        """Produce the step's layer, using the empty dir `work` for scratch space; None when it
        changes no file. Called only when the cache has no result for the step."""
        return None

    def apply(self, state: ImageState) -> None:
        """Move the config and variables on; called after the step, cached or not."""

    def close(self) -> None:
        """Let go of what preparing held (downloads, locks); called once the step is done."""
