"""What a build is asked to do, and what it reports back."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.cancel import Cancellation
from builder.progress import EventCallback

if TYPE_CHECKING:
    from builder.cache.spec import CacheSpec


@dataclass
class BuildOptions:
    """Everything a build is asked to do, as `builder.build` and the CLI gather it."""

    context_dir: Path
    buildfile_path: Path | None  # None when the Buildfile text comes from stdin
    buildfile_text: str
    buildfile_name: str  # as shown in error messages
    tags: tuple[str, ...] = ()
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    platform: str | None = None
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    source_date_epoch: int | None = None
    snapshotter: str = "auto"
    network: str = "default"  # default network mode of RUN steps: default (private), host, none
    pull: bool = False
    insecure_registries: tuple[str, ...] = ()
    secrets: dict[str, Path] = field(default_factory=dict)  # RUN --mount=type=secret sources by id
    on_event: EventCallback | None = None
    cancel: Cancellation | None = None
    cache_from: tuple[CacheSpec, ...] = ()  # --cache-from sources, looked up in this order


@dataclass(frozen=True)
class StepResult:
    """How one step went: cached or run, its cache key, time and layer."""

    stage: str
    number: int  # 1-based within the whole build
    instruction: str
    cached: bool
    cache_key: str
    seconds: float
    layer_diff_id: str | None
    cache_reason: str = ""  # why it was not cached; empty when it was
    cache_source: str = ""  # where a cached step came from: "local", or the --cache-from source


@dataclass(frozen=True)
class BuildResult:
    """What `builder.build` returns: the image, its tags and every step's result."""

    image_id: str  # the config digest, Docker's IMAGE ID
    manifest_digest: str
    config: dict[str, Any]
    manifest: dict[str, Any]
    tags: tuple[str, ...]
    steps: tuple[StepResult, ...]
    # (output spec as given, manifest digest it shipped) for outputs that ship a manifest (oci,
    # registry): their layers are compressed as asked, so their digest is not the local one.
    exported: tuple[tuple[str, str], ...] = ()

    @property
    def digest(self) -> str:
        return self.manifest_digest
