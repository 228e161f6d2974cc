"""Getting images out of the store: OCI layout (dir/tar), docker-archive, flattened tar, local dir."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.export.docker_archive import export_docker_archive
    from builder.export.oci_layout import export_oci
    from builder.export.output import OutputSpec, parse_output_spec, write_output
    from builder.export.rootfs import export_local, export_rootfs_tar

# Each name loads its submodule on first use: an OCI export need not load the docker-archive
# and rootfs exporters (and, through them, layer extraction and tarfile).
_SUBMODULE_OF = {
    "OutputSpec": "output",
    "export_docker_archive": "docker_archive",
    "export_local": "rootfs",
    "export_oci": "oci_layout",
    "export_rootfs_tar": "rootfs",
    "parse_output_spec": "output",
    "write_output": "output",
}

__all__ = [
    "OutputSpec", "export_docker_archive", "export_local", "export_oci", "export_rootfs_tar",
    "parse_output_spec", "write_output",
]


def __getattr__(name: str) -> object:
    submodule = _SUBMODULE_OF.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{submodule}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
