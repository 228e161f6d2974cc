"""Choosing one image out of an image index / manifest list by platform (os/arch[/variant])."""
from __future__ import annotations

import platform as _platform
from dataclasses import dataclass

from builder.errors import RegistryError

_MACHINE_TO_ARCH = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", None),
    "arm64": ("arm64", None),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", None),
    "i686": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def host_platform() -> Platform:
    arch, variant = _MACHINE_TO_ARCH.get(_platform.machine().lower(), (_platform.machine().lower(), None))
    return Platform("linux", arch, variant)


def parse_platform(text: str | None) -> Platform:
    """`linux/amd64`, `linux/arm64/v8`, `arm64` (os defaults to linux); None -> the host's."""
    if not text:
        return host_platform()
    parts = text.strip().lower().split("/")
    if len(parts) == 1:
        parts = ["linux", *parts]
    if len(parts) > 3 or not all(parts):
        raise RegistryError(f"invalid platform {text!r}", hint="use os/arch[/variant], e.g. linux/amd64")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def _variant_matches(wanted: Platform, entry_variant: str | None) -> bool:
    if wanted.variant is None:
        return True
    if wanted.architecture == "arm64" and wanted.variant == "v8":
        return entry_variant in (None, "", "v8")  # arm64 images rarely state v8
    return entry_variant == wanted.variant


def select_manifest(index: dict, wanted: Platform, what: str) -> dict:
    """The descriptor in `index` for `wanted`; a clear error listing what is available otherwise."""
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise RegistryError(f"{what}: image index without a manifests list")
    available: list[str] = []
    candidates: list[dict] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        plat = entry.get("platform") or {}
        os_name = str(plat.get("os", ""))
        arch = str(plat.get("architecture", ""))
        variant = plat.get("variant")
        if os_name == "unknown" or arch == "unknown":
            continue  # attestation manifests pushed by BuildKit
        available.append("/".join(p for p in (os_name, arch, variant) if p))
        if os_name == wanted.os and arch == wanted.architecture and _variant_matches(wanted, variant):
            candidates.append(entry)
    if not candidates:
        raise RegistryError(
            f"{what}: no image for platform {wanted}",
            hint="available: " + (", ".join(available) if available else "none"),
        )
    # With no variant asked for, prefer the highest one listed (arm v7 over v6), as Docker does.
    candidates.sort(key=lambda e: str((e.get("platform") or {}).get("variant") or ""), reverse=True)
    return candidates[0]
