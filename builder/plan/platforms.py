"""Platforms: the build host's, the target's, and the ARGs Docker predefines from them."""
from __future__ import annotations

import platform as host_platform
from dataclasses import dataclass

from builder.errors import PlanError, Pos

_MACHINE_TO_ARCH = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    @classmethod
    def host(cls) -> "Platform":
        architecture, variant = _MACHINE_TO_ARCH.get(host_platform.machine().lower(), (host_platform.machine().lower(), ""))
        return cls("linux", architecture, variant)

    @classmethod
    def parse(cls, text: str, pos: Pos | None = None) -> "Platform":
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise PlanError(
                f"invalid platform {text!r}",
                pos=pos,
                hint="write it as os/arch or os/arch/variant, e.g. linux/amd64",
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def platform_args(build: Platform, target: Platform) -> dict[str, str]:
    """The ARGs Docker defines automatically for every build."""
    return {
        "BUILDPLATFORM": str(build),
        "BUILDOS": build.os,
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant,
        "TARGETPLATFORM": str(target),
        "TARGETOS": target.os,
        "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant,
    }


# Usable in RUN without an ARG line when passed with --build-arg, and kept out of history.
PROXY_ARGS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)
