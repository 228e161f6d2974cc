"""The ARGs Docker predefines from the build and target platforms (Platform itself is builder.platforms)."""
from __future__ import annotations

from builder.platforms import Platform

__all__ = ["PROXY_ARGS", "Platform", "platform_args"]


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
