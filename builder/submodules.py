"""Package names that load their submodule on first use (PEP 562 module __getattr__)."""
from __future__ import annotations

import importlib
from typing import Callable


def load_on_first_use(package: str, submodule_of: dict[str, str],
                      exported: list[str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`: `name` comes from `package.submodule_of[name]`,
    imported when first asked for."""

    def getattr_(name: str) -> object:
        submodule = submodule_of.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{submodule}"), name)

    def dir_() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(exported))

    return getattr_, dir_
