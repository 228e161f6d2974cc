"""Export an image's final file system: into a directory (merged with what is there) or as one tar."""
from __future__ import annotations

from pathlib import Path

from builder.errors import ArchiveError, OutputError
from builder.export.tarout import CountingWriter, atomic_output_file
from builder.image.store import Store
from builder.layer import write_layer
from builder.progress import Transfer


def export_local(store: Store, manifest_digest: str, dest_dir: Path | str) -> None:
    """Write the image's final file system into `dest_dir` (created when missing).

    The layers are merged first (whiteouts act only among them), then the result is written into
    the directory, as BuildKit's local exporter does: what the user already had there stays unless
    the image puts a file at its path, and a directory holding files is never replaced."""
    from builder.layer.applydir import merge_tree
    from builder.snapshot.view import LayeredView

    dest = Path(dest_dir)
    if dest.exists() and not dest.is_dir():
        raise OutputError(f"local output {dest} exists and is not a directory", hint="give a directory path")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create local output directory {dest}: {exc.strerror}") from exc
    view = LayeredView(store.snapshot_dirs(manifest_digest))
    try:
        merge_tree(view.walk(), dest, label="the image")
    except ArchiveError as exc:
        raise OutputError(
            f"cannot export to {dest}: {exc.message}",
            hint="export into an empty directory, or remove what is in the way",
        ) from None


def export_rootfs_tar(store: Store, manifest_digest: str, dest: Path | str, *,
                      source_date_epoch: int | None = None, transfer: Transfer | None = None) -> None:
    """Write the flattened root file system as one uncompressed, sorted tar at `dest` ("-": stdout);
    `transfer` is told the bytes as they are written (their total is not known before)."""
    from builder.snapshot.view import flatten

    with store.tempdir(prefix="flat-") as work:
        # Linked, not copied, from the snapshots: the tar is written from them and they stay as they are.
        merged = flatten(store.snapshot_dirs(manifest_digest), work / "root")
        with atomic_output_file(dest) as out:
            write_layer(merged, CountingWriter(out, transfer), compression="uncompressed",
                        source_date_epoch=source_date_epoch)
