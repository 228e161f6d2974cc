"""The image being built, step by step: layers, OCI config, history, and the variables in scope."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LayerRef:
    diff_id: str
    digest: str
    size: int
    media_type: str

    def to_json(self) -> dict[str, Any]:
        return {"diff_id": self.diff_id, "digest": self.digest, "size": self.size, "media_type": self.media_type}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "LayerRef":
        return cls(data["diff_id"], data["digest"], int(data["size"]), data["media_type"])


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass
class ImageState:
    """Everything a step can see and change. `chain` identifies the state for the cache."""

    layers: list[LayerRef] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # the OCI config's "config" object
    history: list[dict[str, Any]] = field(default_factory=list)
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""
    author: str = ""
    chain: str = "scratch"
    args: dict[str, str] = field(default_factory=dict)  # ARG values in scope (never stored in the image)

    def clone(self) -> "ImageState":
        return copy.deepcopy(self)

    # --- environment -------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            name, _, value = item.partition("=")
            found[name] = value
        return found

    def set_env(self, name: str, value: str) -> None:
        env = self.env()
        env[name] = value
        self.config["Env"] = [f"{key}={val}" for key, val in env.items()]

    def expansion_env(self) -> dict[str, str]:
        """What `$VAR` sees in an instruction: ARGs, overridden by ENV (Docker's rule)."""
        return {**self.args, **self.env()}

    def run_env(self) -> dict[str, str]:
        """The environment of a RUN process: ENV plus ARGs, PATH defaulted like Docker."""
        env = {**self.args, **self.env()}
        env.setdefault("PATH", DEFAULT_PATH)
        return env

    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)

    def workdir(self) -> str:
        return self.config.get("WorkingDir") or "/"

    def user(self) -> str:
        return self.config.get("User") or ""

    # --- (de)serialisation for the step cache ----------------------------------------------
    def snapshot_json(self) -> dict[str, Any]:
        return {
            "layers": [layer.to_json() for layer in self.layers],
            "config": self.config,
            "history": self.history,
            "author": self.author,
        }

    def restore_json(self, data: dict[str, Any]) -> None:
        self.layers = [LayerRef.from_json(item) for item in data["layers"]]
        self.config = copy.deepcopy(data["config"])
        self.history = copy.deepcopy(data["history"])
        self.author = data.get("author", "")
