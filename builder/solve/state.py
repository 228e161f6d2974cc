"""The image being built, step by step: layers, OCI config, history, and the variables in scope.

A step changes the state by a small amount (a layer, a few config keys, one history entry), and
every change costs time in proportion to its own size, never to the size of the state: ENV
values live in a dict (the config's "Env" list is made only when the image is written), and
a state is copied once per stage, not once per step. So a Buildfile's cost stays linear in
its length (4,000 ENV lines must not cost 4,000 copies of a growing environment).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True)
class LayerRef:
    """A layer of an image being built: its diff_id and the blob the manifest names."""

    diff_id: str
    digest: str
    size: int
    media_type: str

    def to_json(self) -> dict[str, Any]:
        return {"diff_id": self.diff_id, "digest": self.digest, "size": self.size, "media_type": self.media_type}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LayerRef":
        return cls(data["diff_id"], data["digest"], int(data["size"]), data["media_type"])


@dataclass
class ImageState:
    """Everything a step can see and change. `chain` identifies the state for the cache."""

    layers: list[LayerRef] = field(default_factory=list)
    # The OCI config's "config" object, but for "Env": once an ENV step ran, the environment is
    # `_env` and config["Env"] is stale; `runtime_config()` gives the object as it goes into the image.
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""
    author: str = ""
    chain: str = "scratch"
    args: dict[str, str] = field(default_factory=dict)  # ARG values in scope (never stored in the image)
    cmd_set_in_stage: bool = False  # Docker: a new ENTRYPOINT drops only a CMD inherited from the base
    _env: dict[str, str] | None = None  # config["Env"] parsed, on first use
    _env_changed: bool = False

    def for_new_stage(self) -> "ImageState":
        """A copy for a stage built FROM this one's result (the one copy a stage makes)."""
        twin = copy.copy(self)
        twin.layers = list(self.layers)
        twin.config = copy.deepcopy(self.config)
        twin.history = list(self.history)  # entries are never changed once appended
        twin.args = dict(self.args)
        twin._env = None if self._env is None else dict(self._env)
        twin.cmd_set_in_stage = False
        return twin

    # --- environment -------------------------------------------------------------------
    def _env_map(self) -> dict[str, str]:
        if self._env is None:
            found: dict[str, str] = {}
            for item in self.config.get("Env") or []:
                name, _, value = item.partition("=")
                found[name] = value
            self._env = found
        return self._env

    def env(self) -> dict[str, str]:
        """The image's ENV (a live view: do not change it, use set_env)."""
        return self._env_map()

    def set_env(self, name: str, value: str) -> None:
        self._env_map()[name] = value
        self._env_changed = True

    def expansion_env(self) -> dict[str, str]:
        """What `$VAR` sees in an instruction: ARGs, overridden by ENV (Docker's rule)."""
        return {**self.args, **self._env_map()}

    def run_env(self) -> dict[str, str]:
        """The environment of a RUN process: ENV plus ARGs, PATH defaulted like Docker."""
        env = {**self.args, **self._env_map()}
        env.setdefault("PATH", DEFAULT_PATH)
        return env

    def ensure_path(self) -> None:
        """BuildKit gives every stage's image a PATH: an image (or scratch) whose Env has none
        gets the default appended, except on Windows, where the OS sets it."""
        if self.os == "windows" or "PATH" in self._env_map():
            return
        if self._env_changed:
            self.set_env("PATH", DEFAULT_PATH)
            return
        # Appended to the image's own list, which stays as it is otherwise (as in BuildKit).
        self.config["Env"] = [*(self.config.get("Env") or []), f"PATH={DEFAULT_PATH}"]
        self._env_map()["PATH"] = DEFAULT_PATH

    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)

    def workdir(self) -> str:
        return self.config.get("WorkingDir") or "/"

    def user(self) -> str:
        return self.config.get("User") or ""

    def runtime_config(self) -> dict[str, Any]:
        """The OCI config's "config" object as it goes into the image."""
        runtime = dict(self.config)
        if self._env is not None and self._env_changed:
            runtime["Env"] = [f"{name}={value}" for name, value in self._env.items()]
        return runtime
