"""Getting images out of the store: OCI layout (dir/tar), docker-archive, flattened tar, local dir."""
from builder.export.docker_archive import export_docker_archive
from builder.export.oci_layout import export_oci
from builder.export.output import OutputSpec, parse_output_spec, write_output
from builder.export.rootfs import export_local, export_rootfs_tar

__all__ = [
    "OutputSpec", "export_docker_archive", "export_local", "export_oci", "export_rootfs_tar",
    "parse_output_spec", "write_output",
]
