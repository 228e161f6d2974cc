"""Step cache keys and the explanation of a miss.

A step's key hashes its parent's chain id with the canonical form of the step: the instruction
after expansion, what it can see (args and env for RUN), its flags, and digests of its inputs.
The key of a step is also the chain id of the state after it, so a change anywhere above a step
changes its key. Beside each entry, the components are kept under a "lineage" key (Buildfile,
stage, step number), so a later miss can say which component changed.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping


def _digest(data: Any) -> str:
    encoded = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def step_key(parent_chain: str, components: Mapping[str, Any]) -> str:
    return _digest({"parent": parent_chain, "step": dict(components)})


def lineage_key(buildfile_path: str, stage_label: str, step_number: int) -> str:
    return "lineage:" + _digest([buildfile_path, stage_label, step_number])


_COMPONENT_WORDS = {
    "instruction": "the instruction changed",
    "sources": "source files changed",
    "env": "variables visible to the step changed",
    "user": "USER changed",
    "workdir": "WORKDIR changed",
    "shell": "SHELL changed",
    "network": "the network mode changed",
    "mounts": "RUN --mount inputs changed",
    "from": "the --from source changed",
    "options": "build options changed",
    "change": "the config change differs",
    "runtime": "this builder runs RUN steps differently from the one that cached it",
}


def explain_miss(
    previous: Mapping[str, Any] | None, parent_chain: str, components: Mapping[str, Any], no_cache: bool
) -> str:
    """Why a step was not taken from the cache, in words a user can act on."""
    if no_cache:
        return "cache disabled (--no-cache)"
    if previous is None:
        return "not built before with this Buildfile position"
    reasons: list[str] = []
    if previous.get("parent") != parent_chain:
        reasons.append("a previous step or the base image changed")
    old_components = previous.get("components", {})
    for name in sorted(set(old_components) | set(components)):
        if old_components.get(name) != components.get(name):
            if name == "env" and isinstance(components.get(name), dict):
                old_env = old_components.get(name) or {}
                new_env = components.get(name) or {}
                changed = sorted(key for key in set(old_env) | set(new_env) if old_env.get(key) != new_env.get(key))
                reasons.append("variables changed: " + ", ".join(changed))
            else:
                reasons.append(_COMPONENT_WORDS.get(name, f"{name} changed"))
    if not reasons:
        return "the cached result is no longer in the store"
    return "; ".join(reasons)


def entry_blobs(value: Mapping[str, Any]) -> set[str]:
    """The layer blobs a step-cache value needs to be usable (what `prune` and `df` count): a
    step's entry names its layer under "layer"; a COPY --link entry is a layer itself."""
    layer = value.get("layer") if "layer" in value else value
    if isinstance(layer, Mapping) and isinstance(layer.get("digest"), str):
        return {layer["digest"]}
    return set()
