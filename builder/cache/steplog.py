"""The steps of a build as they ended, in the order they did: what --cache-to exports from.

Kept apart from the exporter so every build can log its steps without loading it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True)
class LoggedStep:
    """A step as the build ended it (taken from a cache or run): what a record keeps of it."""

    stage: int  # the stage's index in the plan
    key: str
    value: Mapping  # the solver's cache entry (solve.solver.CachedStep.to_json())


def select_steps(log: Iterable[LoggedStep], mode: str, final_stages: set[int]) -> list[tuple[str, Mapping]]:
    return [(step.key, step.value) for step in log if mode == "max" or step.stage in final_stages]
