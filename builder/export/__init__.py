"""Getting images out of the store: OCI layout (dir/tar), docker-archive, flattened tar, local dir."""
from __future__ import annotations

from typing import TYPE_CHECKING

from builder.submodules import load_on_first_use

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


__getattr__, __dir__ = load_on_first_use(__name__, _SUBMODULE_OF, __all__)
