"""The one Platform: os/architecture/variant as OCI and Docker name them, parsed, normalised and
matched the same way everywhere (FROM --platform, --platform, pulls, indexes, loaded archives).

Normalisation follows containerd's: names are lower-cased, machine names become Go's
(`x86_64` -> amd64, `aarch64` -> arm64), a bare architecture means linux, and arm64's `v8`
variant is the default one, so `linux/arm64` and `linux/arm64/v8` are the same platform.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from builder.errors import PlanError, Pos

_ARCH_ALIASES = {
    "x86_64": ("amd64", ""), "x86-64": ("amd64", ""), "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""), "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"), "armhf": ("arm", "v7"), "armv6l": ("arm", "v6"), "armel": ("arm", "v6"),
    "i386": ("386", ""), "i686": ("386", ""), "386": ("386", ""),
}
_OS_NAMES = ("linux", "windows", "darwin", "freebsd")
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""  # "" when none

    def __post_init__(self) -> None:
        os_name = self.os.lower()
        architecture, implied_variant = _ARCH_ALIASES.get(self.architecture.lower(), (self.architecture.lower(), ""))
        variant = (self.variant or implied_variant).lower()
        if architecture == "arm64" and variant in ("v8", "8"):
            variant = ""  # the default arm64 variant: images rarely state it
        elif architecture == "arm" and variant.isdigit():
            variant = "v" + variant
        object.__setattr__(self, "os", os_name)
        object.__setattr__(self, "architecture", architecture)
        object.__setattr__(self, "variant", variant)

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    @classmethod
    def host(cls) -> "Platform":
        return cls("linux", os.uname().machine)  # what platform.machine() reads, without loading it

    @classmethod
    def parse(cls, text: str, pos: Pos | None = None) -> "Platform":
        """`linux/amd64`, `linux/arm/v7`, `arm64` (a bare architecture means linux)."""
        if "," in text:
            raise PlanError(
                f"invalid platform {text!r}: one platform per build",
                pos=pos,
                hint="building several platforms into one image index is not supported yet; "
                     "build each with its own --platform",
            )
        parts = text.strip().split("/")
        if len(parts) == 1 and parts[0] and parts[0].lower() not in _OS_NAMES:
            parts = ["linux", *parts]
        if len(parts) not in (2, 3) or not all(_PART.fullmatch(part) for part in parts):
            raise PlanError(
                f"invalid platform {text!r}",
                pos=pos,
                hint="write it as os/arch or os/arch/variant, e.g. linux/amd64",
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Platform":
        return cls(str(obj.get("os") or "linux"), str(obj.get("architecture") or "amd64"), str(obj.get("variant") or ""))

    def matches(self, other: "Platform") -> bool:
        """Same os and architecture, and the variants agree where both name one."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return not self.variant or not other.variant or self.variant == other.variant
