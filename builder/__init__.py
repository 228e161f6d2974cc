"""A daemonless, reproducible Dockerfile-style container image builder.

    import builder
    result = builder.build("ctx", tags=["app:1"], outputs=["type=oci,dest=app.tar"])
    result.image_id, result.steps

`build` and the result types load on first use, so `import builder` (and the CLI's no-op
path) stays cheap; type checkers and IDEs see the real signatures.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from builder.cancel import Cancellation
from builder.errors import (
    BuildCancelled,
    BuildError,
    ContextError,
    ExpansionError,
    ImageNotFound,
    InvalidArgument,
    OutputError,
    ParseError,
    PlanError,
    RegistryError,
    RunError,
    SandboxError,
    StoreError,
)

if TYPE_CHECKING:
    from builder.api import build, plan
    from builder.progress import Event, EventCallback, EventKind
    from builder.solve.options import BuildResult, StepResult

__version__ = "0.1.0"

# name -> module it is loaded from on first use
_LAZY = {
    "build": "builder.api",
    "plan": "builder.api",
    "BuildResult": "builder.solve.options",
    "StepResult": "builder.solve.options",
    "Event": "builder.progress",
    "EventKind": "builder.progress",
    "EventCallback": "builder.progress",
}

__all__ = [
    "build", "plan", "BuildResult", "StepResult", "Event", "EventKind", "EventCallback", "Cancellation",
    "BuildError", "BuildCancelled", "InvalidArgument", "ParseError", "ExpansionError", "PlanError",
    "ContextError", "RunError", "SandboxError", "StoreError", "ImageNotFound", "RegistryError", "OutputError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'builder' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
