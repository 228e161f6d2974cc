"""Choosing one image out of an image index / manifest list by platform (os/arch[/variant])."""
from __future__ import annotations

from builder.errors import RegistryError
from builder.platforms import Platform


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
        plat = entry.get("platform")
        if not isinstance(plat, dict) or "unknown" in (plat.get("os"), plat.get("architecture")):
            continue  # no platform, or an attestation manifest pushed by BuildKit
        offered = Platform.from_json(plat)
        available.append(str(offered))
        if offered.matches(wanted):
            candidates.append(entry)
    if not candidates:
        raise RegistryError(
            f"{what}: no image for platform {wanted}",
            hint="available: " + (", ".join(available) if available else "none"),
        )
    # With no variant asked for, prefer the highest one listed (arm v7 over v6), as Docker does.
    candidates.sort(key=lambda e: str((e.get("platform") or {}).get("variant") or ""), reverse=True)
    return candidates[0]
