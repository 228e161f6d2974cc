"""Store upkeep: `builder fsck`, `builder prune` (build cache and dangling layers), `builder df`."""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import stat
import sys

from builder.commands.images import human_size
from builder.errors import BuildError
from builder.image.blobfiles import store_dir
from builder.image.inuse import no_build_running
from builder.image.store import Store
from builder.solve.cache import entry_blobs

RECENT_SECONDS = 3600

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    unit = (match.group(2) or "").lower() if match else None
    if match is None or unit not in _UNITS:
        raise BuildError(f"invalid size {text!r}", hint="write a size like 500MB, 2GiB or 1000000")
    return int(float(match.group(1)) * _UNITS[unit])


def _blob_size(store: Store, digest: str) -> int:
    try:
        return store.blob_path(digest).stat().st_size
    except (OSError, BuildError):
        return 0


def _image_blob_digests(store: Store) -> set[str]:
    found: set[str] = set()
    for record in store.images():
        found.add(record.manifest_digest)
        found.add(record.config_digest)
        found.update(layer["digest"] for layer in record.manifest.get("layers", []))
    return found


def prune_cache(store: Store, *, everything: bool, keep_storage: int | None) -> tuple[int, int]:
    """Forget build cache entries, then collect what nothing references. Returns (entries, bytes)."""
    entries = store.cache_entries()
    image_blobs = _image_blob_digests(store)
    doomed: list[str] = []
    if everything:
        doomed = [key for key, _, _ in entries]
    else:
        # Entries whose layers are gone can never be used again.
        doomed = [
            key for key, value, _ in entries
            if not key.startswith("lineage:") and not all(store.has_layer(d) for d in entry_blobs(value))
        ]
        if keep_storage is not None:
            kept_bytes = 0
            counted: set[str] = set()
            for key, value, _ in sorted(entries, key=lambda entry: entry[2], reverse=True):
                if key in doomed or key.startswith("lineage:"):
                    continue
                own = entry_blobs(value) - image_blobs - counted
                size = sum(_blob_size(store, digest) for digest in own)
                if kept_bytes + size > keep_storage:
                    doomed.append(key)
                    continue
                kept_bytes += size
                counted |= own
    for key in doomed:
        store.cache_delete(key)
    _remove_idle_step_locks(store)
    with no_build_running(store) as alone:
        # While a build runs, a blob it wrote a moment ago may not be referenced yet: spare recent ones.
        result = store.gc(min_age=0 if alone else RECENT_SECONDS)
    if not alone:
        print(f"builds are running: blobs newer than {RECENT_SECONDS // 60} minutes were kept", file=sys.stderr)
    return len(doomed), result.freed_bytes


def _remove_idle_step_locks(store: Store) -> None:
    """Step locks (one per step a build ran) are kept while some build may wait on them.

    By the locks dir's fd, never following a link (a link named step-* is just removed)."""
    with store_dir(store.root, "locks") as locks_fd:
        for name in os.listdir(locks_fd):
            if not name.startswith("step-"):
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=locks_fd)
            except OSError:
                try:
                    os.unlink(name, dir_fd=locks_fd)  # not a lock file we made (e.g. a link)
                except OSError:
                    pass
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(name, dir_fd=locks_fd)
            except (BlockingIOError, FileNotFoundError):
                continue
            finally:
                os.close(fd)


def disk_usage(store: Store) -> dict[str, dict[str, int]]:
    """What the store holds. images and build cache: their layers' uncompressed bytes (each
    layer once), as `docker system df` counts; blobs and snapshots: bytes on disk."""
    from builder.commands.images import layer_sizes

    image_layers: dict[str, int] = {}
    records = store.images()
    for record in records:
        diff_ids = (record.config.get("rootfs") or {}).get("diff_ids") or []
        image_layers.update(zip(diff_ids, layer_sizes(store, record), strict=False))
    entries = store.cache_entries()
    cache_layers: dict[str, int] = {}
    for _, value, _ in entries:
        for digest in entry_blobs(value):
            if digest not in image_layers:
                known = store.blobs.diff(digest)
                cache_layers[digest] = known.size if known is not None else _blob_size(store, digest)
    blob_count, blob_bytes = _tree_usage(store, "blobs/sha256", depth=1)
    snapshot_count, snapshot_bytes = _tree_usage(store, "s", depth=None)
    return {
        "images": {"count": len(records), "bytes": sum(image_layers.values())},
        "build cache": {"count": sum(1 for key, _, _ in entries if not key.startswith("lineage:")),
                        "bytes": sum(cache_layers.values())},
        "blobs": {"count": blob_count, "bytes": blob_bytes},
        "snapshots": {"count": snapshot_count, "bytes": snapshot_bytes},
    }


def _tree_usage(store: Store, relpath: str, *, depth: int | None) -> tuple[int, int]:
    """(entries at the top, bytes the files below take on disk), walked by dir fds without
    following links; a file linked several times counts once."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def walk(dir_fd: int, level: int) -> None:
        nonlocal total
        for name in os.listdir(dir_fd):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:  # removed by a concurrent prune
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
            if stat.S_ISDIR(st.st_mode) and (depth is None or level < depth):
                try:
                    child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                except OSError:
                    continue
                try:
                    walk(child, level + 1)
                finally:
                    os.close(child)

    with store_dir(store.root, relpath) as top_fd:
        count = len(os.listdir(top_fd))
        walk(top_fd, 1)
    return count, total


def _run_fsck(args: argparse.Namespace) -> int:
    store = Store.open(args.root)
    problems = store.fsck()
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found in {store.root}", file=sys.stderr)
        return 1
    print(f"store {store.root} is valid")
    return 0


def _run_prune(args: argparse.Namespace) -> int:
    store = Store.open(args.root)
    keep = parse_size(args.keep_storage) if args.keep_storage else None
    entries, freed = prune_cache(store, everything=args.all, keep_storage=keep)
    print(f"removed {entries} cache entries, reclaimed {human_size(freed)}")
    return 0


def _run_df(args: argparse.Namespace) -> int:
    usage = disk_usage(Store.open(args.root))
    if args.format == "json":
        print(json.dumps(usage, indent=2))
        return 0
    print(f"{'TYPE':<14}{'COUNT':>8}{'SIZE':>12}")
    for kind, figures in usage.items():
        print(f"{kind:<14}{figures['count']:>8}{human_size(figures['bytes']):>12}")
    print("images and build cache: layers uncompressed, each once; blobs and snapshots: bytes on disk")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    fsck = subparsers.add_parser("fsck", help="re-hash every blob and check every reference in the store")
    fsck.set_defaults(handler=_run_fsck)
    prune = subparsers.add_parser("prune", help="remove unused build cache and dangling layers")
    prune.add_argument("-a", "--all", action="store_true", help="remove the whole build cache")
    prune.add_argument("--keep-storage", metavar="SIZE", help="keep the most recently used cache within SIZE")
    prune.add_argument("-f", "--force", action="store_true", help="accepted as in docker (prune never prompts)")
    prune.set_defaults(handler=_run_prune)
    df = subparsers.add_parser("df", help="show what uses the store's disk space")
    df.add_argument("--format", choices=["table", "json"], default="table")
    df.set_defaults(handler=_run_df)
