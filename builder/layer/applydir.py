"""Apply a layer dir in overlay-upper format onto a merged tree (flattening snapshots)."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from builder.errors import ArchiveError
from builder.userns import in_user_namespace

from .extract import EntryMeta, TreeWriter, apply_layer_stream
from .tarwrite import decode_name, is_opaque_dir, is_whiteout, read_xattrs


def _walk(root: bytes, rel_parts: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], bytes, os.stat_result]]:
    """(parts, absolute path, lstat) depth-first, names sorted bytewise, dirs before contents."""
    abs_dir = os.path.join(root, *[os.fsencode(p) for p in rel_parts]) if rel_parts else root
    with os.scandir(abs_dir) as it:
        names = sorted(entry.name for entry in it)
    for name in names:
        abs_path = os.path.join(abs_dir, name)
        st = os.lstat(abs_path)
        parts = rel_parts + (decode_name(name),)
        yield parts, abs_path, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, parts)


def apply_layer(source: BinaryIO | Path, merged_dir: Path) -> None:
    """Apply a layer onto a flattened tree: a (possibly compressed) tar stream, or a layer dir
    in overlay-upper format. Whiteouts delete, opaque markers empty the directory of earlier
    content, other entries replace what is there."""
    if isinstance(source, (str, os.PathLike)):
        apply_layer_dir(Path(source), merged_dir)
    else:
        apply_layer_stream(source, merged_dir)


def apply_layer_dir(layer_dir: Path, merged_dir: Path) -> None:
    """Apply `layer_dir` (0/0 char devices = deleted, opaque xattr = hides lower) onto merged_dir."""
    root = os.fsencode(layer_dir)
    target = TreeWriter(Path(merged_dir), upper=False)
    try:
        if is_opaque_dir(root):
            target.opaque(())
        _write_all(target, _walk(root), str(layer_dir), changeset=True)
    except OSError as err:
        raise ArchiveError(f"cannot apply layer dir {layer_dir} onto {merged_dir}: {err}") from err
    finally:
        target.close()


def merge_tree(entries: Iterable[tuple[tuple[str, ...], Path | bytes, os.stat_result]], dest_dir: Path,
               label: str) -> None:
    """Write a finished tree (no whiteouts; `entries` as (parts, host path, lstat), dirs before
    their contents) into `dest_dir`, which may hold files of its own: those stay, unless an entry
    of the tree takes their path; a directory that holds something is never replaced.

    Owners are kept only by root: an ordinary user (rootless, in a user namespace) gets files of
    their own, which they can change and delete, as buildx writes a local export for them."""
    as_root = os.geteuid() == 0 and not in_user_namespace()
    target = TreeWriter(Path(dest_dir), upper=False, keep_full_dirs=True, exact=as_root)
    try:
        _write_all(target, entries, label, changeset=False)
    except OSError as err:
        raise ArchiveError(f"cannot write {label} into {dest_dir}: {err}") from err
    finally:
        target.close()


def _write_all(target: TreeWriter, entries: Iterable[tuple[tuple[str, ...], Path | bytes, os.stat_result]],
               label: str, *, changeset: bool) -> None:
    links: dict[tuple[int, int], tuple[str, ...]] = {}
    for parts, abs_path, st in entries:
        try:
            _apply_one(target, links, parts, os.fsencode(abs_path), st, changeset=changeset)
        except ArchiveError:
            raise
        except (OSError, ValueError) as err:
            raise ArchiveError(f"cannot apply {'/'.join(parts)!r} from {label}: {err}") from err
    target.finish()


def _apply_one(
    target: TreeWriter,
    links: dict[tuple[int, int], tuple[str, ...]],
    parts: tuple[str, ...],
    abs_path: bytes,
    st: os.stat_result,
    *,
    changeset: bool,
) -> None:
    """One entry of a layer dir (`changeset`: whiteouts and opaque dirs act) or of a finished tree."""
    if changeset and is_whiteout(st):
        target.whiteout(parts)
        return
    mode = st.st_mode
    meta = EntryMeta(
        mode=stat.S_IMODE(mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        xattrs=read_xattrs(abs_path),
    )
    if stat.S_ISDIR(mode):
        target.add_dir(parts, meta)
        if changeset and is_opaque_dir(abs_path):
            target.opaque(parts)
        return
    if stat.S_ISSOCK(mode):
        return
    if st.st_nlink > 1:
        first = links.get((st.st_dev, st.st_ino))
        if first is not None:
            target.add_hardlink(parts, first)
            return
        links[(st.st_dev, st.st_ino)] = parts
    if stat.S_ISREG(mode):
        fd = os.open(abs_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb", buffering=0) as content:
            target.add_file(parts, meta, content, os.fstat(fd).st_size)
    elif stat.S_ISLNK(mode):
        target.add_symlink(parts, meta, decode_name(os.readlink(abs_path)))
    elif stat.S_ISFIFO(mode):
        target.add_node(parts, meta, stat.S_IFIFO, 0)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = stat.S_IFCHR if stat.S_ISCHR(mode) else stat.S_IFBLK
        target.add_node(parts, meta, kind, st.st_rdev)
