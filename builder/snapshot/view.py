"""A read-only merged view over a stack of layer dirs in the overlay-upper format, without mounting.

Layer dirs are given lowest first. A deleted path is a character device 0/0; a directory with
the overlay opaque xattr =y (trusted.overlay.opaque, or user.overlay.opaque when rootless: see
builder.userns) hides everything below it in lower layers. Paths are absolute
in-image paths; symlinks met on the way are resolved inside the view (an absolute target starts
again at the image's root, `..` never climbs above it), never on the host.
"""
from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from builder.userns import is_overlay_xattr, opaque_xattr

MAX_SYMLINK_HOPS = 40


def is_whiteout(st: os.stat_result) -> bool:
    """True for the overlay whiteout marker: a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(host_dir: Path | str) -> bool:
    """True if the directory carries the overlay opaque xattr with the value y."""
    try:
        return os.getxattr(host_dir, opaque_xattr(), follow_symlinks=False) == b"y"
    except OSError:
        return False


def split_path(path: str) -> tuple[str, ...]:
    """Components of an in-image path, normalised lexically ('.', empty and '..' at root dropped)."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return tuple(parts)


def image_xattrs(host_path: Path | str) -> dict[str, bytes]:
    """The xattrs of a file that belong to the image (overlay's own trusted/user.overlay.* left out)."""
    try:
        names = os.listxattr(host_path, follow_symlinks=False)
    except OSError:
        return {}
    result: dict[str, bytes] = {}
    for name in sorted(names):
        if is_overlay_xattr(name):
            continue
        try:
            result[name] = os.getxattr(host_path, name, follow_symlinks=False)
        except OSError:
            continue
    return result


class LayeredView:
    """Answers questions about the file system a stack of layer dirs makes, lowest layer first."""

    def __init__(self, layer_dirs: Sequence[Path | str]) -> None:
        self.layers: tuple[Path, ...] = tuple(Path(d) for d in layer_dirs)
        # Canonical (symlink-free) components -> [(layer index, host path, lstat)], top first.
        # Layers never change while a view is used, so answers can be kept.
        self._chains: dict[tuple[str, ...], list[tuple[int, Path, os.stat_result]]] = {}

    # -- core: which layers contribute to a symlink-free path ----------------------------------

    def _chain(self, parts: tuple[str, ...]) -> list[tuple[int, Path, os.stat_result]]:
        """Layers holding `parts` (top first), stopping where lower layers are hidden.

        Empty if the path does not exist. For a directory, every entry is a directory that
        merges; for anything else it is the single visible entry.
        """
        cached = self._chains.get(parts)
        if cached is not None:
            return cached
        if not parts:
            chain = []
            for index in range(len(self.layers) - 1, -1, -1):
                host = self.layers[index]
                chain.append((index, host, os.lstat(host)))
                if is_opaque(host):
                    break
        else:
            parent = self._chain(parts[:-1])
            chain = []
            if parent and stat.S_ISDIR(parent[0][2].st_mode):
                for index, parent_host, _ in parent:
                    host = parent_host / parts[-1]
                    try:
                        st = os.lstat(host)
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                    if chain and not stat.S_ISDIR(st.st_mode):
                        break  # a lower non-dir under an upper dir is hidden
                    chain.append((index, host, st))
                    if not stat.S_ISDIR(st.st_mode) or is_opaque(host):
                        break
            if chain and is_whiteout(chain[0][2]):
                chain = []
        self._chains[parts] = chain
        return chain

    def _resolve(
        self, path: str, follow_last: bool, visited: list[tuple[str, ...]] | None = None
    ) -> tuple[str, ...] | None:
        """Canonical components of `path` with symlinks resolved in the view; None if a
        component is missing or not a directory, or symlinks loop. Every canonical entry looked
        at on the way (directories passed through, symlinks followed) is appended to `visited`."""
        pending = list(split_path(path))
        pending.reverse()
        resolved: list[str] = []
        hops = 0
        while pending:
            name = pending.pop()
            if name == "..":
                if resolved:
                    resolved.pop()
                continue
            if name == ".":
                continue
            candidate = tuple(resolved) + (name,)
            chain = self._chain(candidate)
            if not chain:
                # A missing last component is still a valid answer (callers may create it).
                return candidate if not pending else None
            st = chain[0][2]
            if visited is not None:
                visited.append(candidate)
            if stat.S_ISLNK(st.st_mode) and (pending or follow_last):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    return None
                target = os.readlink(chain[0][1])
                if target.startswith("/"):
                    resolved = []
                more = [p for p in target.split("/") if p not in ("",)]
                pending.extend(reversed(more))
                continue
            if pending and not stat.S_ISDIR(st.st_mode):
                return None
            resolved.append(name)
        return tuple(resolved)

    # -- public API -------------------------------------------------------------------------

    def entries_on_the_way(self, path: str) -> list[tuple[str, ...]]:
        """The canonical entries met resolving `path`, its last component followed too: every
        directory passed through and every symlink (a chain `a -> b -> c` meets `b`, a target
        `d/sub/../x` meets `d/sub`). A copy of the view holding them resolves `path` the same."""
        visited: list[tuple[str, ...]] = []
        self._resolve(path, True, visited)
        return visited

    def resolve(self, path: str, *, follow: bool = False) -> str | None:
        """The canonical absolute path of `path` in the image (intermediate symlinks resolved,
        the last one too if follow). None if an intermediate component is missing."""
        parts = self._resolve(path, follow)
        return None if parts is None else "/" + "/".join(parts)

    def lookup(self, path: str, *, follow: bool = False) -> os.stat_result | None:
        """lstat of `path` in the merged image (stat if follow), or None if it does not exist."""
        parts = self._resolve(path, follow)
        if parts is None:
            return None
        chain = self._chain(parts)
        return chain[0][2] if chain else None

    def exists(self, path: str) -> bool:
        return self.lookup(path) is not None

    def is_dir(self, path: str) -> bool:
        """True if `path` is a directory, following symlinks inside the view."""
        st = self.lookup(path, follow=True)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def listdir(self, path: str = "/") -> list[str]:
        """Sorted names in the merged directory `path` (symlinks followed); [] if not a dir."""
        parts = self._resolve(path, True)
        if parts is None:
            return []
        return sorted(self._merged_names(parts))

    def _merged_names(self, parts: tuple[str, ...]) -> set[str]:
        chain = self._chain(parts)
        if not chain or not stat.S_ISDIR(chain[0][2].st_mode):
            return set()
        seen: dict[str, bool] = {}
        for _, host, _ in chain:
            with os.scandir(host) as entries:
                for entry in entries:
                    if entry.name in seen:
                        continue
                    seen[entry.name] = is_whiteout(entry.stat(follow_symlinks=False))
        return {name for name, whiteout in seen.items() if not whiteout}

    def host_path(self, path: str, *, follow: bool = False) -> Path | None:
        """The host path of the topmost real entry backing `path`, or None."""
        parts = self._resolve(path, follow)
        if parts is None:
            return None
        chain = self._chain(parts)
        return chain[0][1] if chain else None

    def read_bytes(self, path: str, *, limit: int = 1 << 20) -> bytes | None:
        """Contents of a small regular file (symlinks followed in the view); None if missing."""
        host = self.host_path(path, follow=True)
        if host is None:
            return None
        st = os.lstat(host)
        if not stat.S_ISREG(st.st_mode):
            return None
        with open(host, "rb") as handle:
            return handle.read(limit)

    def entry(self, parts: tuple[str, ...]) -> tuple[Path, os.stat_result] | None:
        """Host path and lstat of the visible entry at canonical components `parts`."""
        chain = self._chain(parts)
        return (chain[0][1], chain[0][2]) if chain else None

    def children(self, parts: tuple[str, ...]) -> list[str]:
        """Sorted merged names under canonical components `parts` (no symlink resolution)."""
        return sorted(self._merged_names(parts))

    def walk(self, parts: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Path, os.stat_result]]:
        """(components, host path, lstat) of every visible entry below `parts`, depth first,
        names sorted, each dir before its contents; links are entries, never followed."""
        for name in self.children(parts):
            child = parts + (name,)
            found = self.entry(child)
            if found is None:
                continue
            host, st = found
            yield child, host, st
            if stat.S_ISDIR(st.st_mode):
                yield from self.walk(child)


# -- flatten ------------------------------------------------------------------------------------


def copy_metadata(host_src: Path | str, dest: Path | str, st: os.stat_result) -> None:
    """Owner, mode, xattrs and times of `st`/`host_src` onto `dest` (no symlink following)."""
    os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
    for name, value in image_xattrs(host_src).items():
        try:
            os.setxattr(dest, name, value, follow_symlinks=False)
        except OSError:
            pass  # e.g. security.* the host refuses; the content is still right
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dest, stat.S_IMODE(st.st_mode))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_file_data(src: Path | str, dest: Path | str) -> None:
    """Copy a regular file's bytes in chunks (the kernel does it where it can)."""
    shutil.copyfile(src, dest, follow_symlinks=False)


def flatten(
    layer_dirs: Sequence[Path | str],
    dest: Path,
    *,
    hardlink: bool = True,
    keep_hardlinks: bool = True,
    dir_inodes: dict[str, int] | None = None,
    only: Sequence[str] | None = None,
) -> Path:
    """Write the merged tree of `layer_dirs` into `dest` (created; must be empty if it exists).

    `only` limits it to what those in-image paths need: their subtrees, their parent dirs, and
    the symlinks on the way with what they point to (so `COPY --from` need not copy a whole
    image to read one dir).

    hardlink=True links regular files into the layer dirs (cheap; callers must then not modify
    them). hardlink=False copies bytes. keep_hardlinks keeps files that share an inode in a
    layer sharing one in `dest` too (False breaks them, as overlay without index does).
    If `dir_inodes` is given it is filled with in-image path -> inode of every dir created.
    Layer dirs are never modified.
    """
    view = LayeredView(layer_dirs)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = None if only is None else _wanted_parts(view, only)
    links: dict[tuple[int, int], Path] = {}
    dir_times: list[tuple[Path, Path, os.stat_result]] = []

    def place(parts: tuple[str, ...], target: Path) -> None:
        found = view.entry(parts)
        if found is None:
            return
        host, st = found
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            if parts:
                target.mkdir()
            if dir_inodes is not None:
                dir_inodes["/" + "/".join(parts)] = os.lstat(target).st_ino
            for name in view.children(parts):
                if wanted is None or _needed(parts + (name,), wanted):
                    place(parts + (name,), target / name)
            dir_times.append((host, target, st))
            return
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if keep_hardlinks and st.st_nlink > 1 and key in links:
                os.link(links[key], target)
                return
            if hardlink:
                try:
                    os.link(host, target)
                    return
                except OSError:
                    pass  # another file system or a refusing one: copy instead
            copy_file_data(host, target)
            copy_metadata(host, target, st)
            if keep_hardlinks and st.st_nlink > 1:
                links[key] = target
            return
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(host), target)
            copy_metadata(host, target, st)
            return
        # Devices, fifos, sockets.
        os.mknod(target, mode, st.st_rdev)
        copy_metadata(host, target, st)

    place((), dest)
    # Directory times last: creating children changed them.
    for host, target, st in dir_times:
        copy_metadata(host, target, st)
    return dest


@dataclass(frozen=True)
class _Wanted:
    """What `flatten(only=...)` keeps: whole subtrees, and single entries (with their parents)."""

    subtrees: frozenset[tuple[str, ...]]
    entries: frozenset[tuple[str, ...]]


def _wanted_parts(view: LayeredView, paths: Sequence[str]) -> _Wanted:
    """Each path (as written, and where it leads) as a subtree, and every entry resolving it
    meets (the dirs and symlinks on the way, so it resolves the same in the copy)."""
    subtrees: set[tuple[str, ...]] = set()
    entries: set[tuple[str, ...]] = set()
    for path in paths:
        literal = tuple(part for part in path.split("/") if part and part != ".")
        subtrees.add(literal)
        joined = "/" + "/".join(literal)
        canonical = view.resolve(joined, follow=True)
        if canonical is not None:
            subtrees.add(split_path(canonical))
        entries.update(view.entries_on_the_way(joined))
    return _Wanted(frozenset(subtrees), frozenset(entries))


def _needed(parts: tuple[str, ...], wanted: _Wanted) -> bool:
    """On the way to a wanted subtree or entry, or inside a wanted subtree."""
    for path in wanted.subtrees:
        shorter = min(len(parts), len(path))
        if parts[:shorter] == path[:shorter]:
            return True
    return any(len(parts) <= len(entry) and entry[: len(parts)] == parts for entry in wanted.entries)
