"""The source side of COPY/ADD: a root directory, what is visible in it, and its content digest.

A `BuildContext` is either the build context (files filtered by `.dockerignore`, owners reset to
0:0 as Docker does when it receives a context) or, with `chroot=True`, another stage's flattened
rootfs for `COPY --from` (nothing ignored, owners kept, absolute symlinks resolve inside it).

Containment rules, applied to every source pattern:
* a leading `/` means the root; `..` that climbs above the root is an error in a context (the
  classic builder's "forbidden path outside the build context"; BuildKit would silently clamp it,
  which hides mistakes) and is clamped at the root of a stage rootfs, as in a chroot;
* symlinks met on the way, and a symlink that *is* the selected source (named or matched by a
  wildcard; BuildKit's FollowSymlinks), resolve with the root as their root, as BuildKit's
  RootPath does: an absolute target starts again at the root, `..` stops there, nothing on the
  host is ever looked at. In a context, a link that pointed out and whose target is not found
  inside is reported as pointing out; an absolute target naming the context's own host path is
  taken as that path inside. `select(follow_links=False)` keeps a source link as a link
  (COPY --parents); links found inside a copied directory are always copied as links;
* ignored files are invisible, exactly as if BuildKit had never received them: Docker's context
  walk enters an ignored directory only for an exception that spells its path out
  (`IgnoreMatcher.may_contain_exceptions`), and then sends the directory itself.

Wildcards follow Go's `filepath.Match` on each path component (fsutil's ResolveWildcards): `*` and
`?` never cross `/`, `[...]` classes with `^` negation, `\\` escapes. `**` is not special in COPY
sources: it behaves like `*` within one component.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from builder.context.dockerignore import IgnoreMatcher, go_clean
from builder.errors import ContextError, Pos
from builder.parse.wildcard import NOT_SLASH, Char, CharTest, Matcher, Seq, Star, check_pattern_length

if TYPE_CHECKING:
    from builder.context.statcache import Known, StatCache

_MAX_LINK_HOPS = 40
_CHUNK = 1 << 20
SKIPPED_XATTR_PREFIXES = ("trusted.overlay.",)


def contains_wildcards(component: str) -> bool:
    """fsutil's containsWildcards: `*`, `?` or `[` not preceded by a backslash."""
    i = 0
    while i < len(component):
        ch = component[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


def _go_match_pattern(pattern: str) -> Matcher:
    """Go `filepath.Match` for one component, compiled to a matcher that cannot backtrack.

    `*` and `?` never match `/`; `\\x` is a literal x, inside a class too; a class is `[...]`
    or `[^...]` with ranges `a-z`, and, more lenient than Go, a `]` right after the `[` (or
    `[^`) and a `-` first or last are literal members. A reversed range (`[z-a]`) is an error.
    """
    try:
        check_pattern_length(pattern)
    except ValueError as error:
        raise ContextError(f"{error}: {pattern[:40]!r}...") from None
    items: list = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            items.append(Star(Char(NOT_SLASH)))
        elif ch == "?":
            items.append(Char(NOT_SLASH))
        elif ch == "\\" and i < n:
            items.append(Char(CharTest.literal(pattern[i])))
            i += 1
        elif ch == "[":
            test, i = _go_class(pattern, i)
            items.append(Char(test))
        else:
            items.append(Char(CharTest.literal(ch)))
    return Matcher(Seq(tuple(items)))


def _go_class(pattern: str, i: int) -> tuple[CharTest, int]:
    """The class whose body starts at `i` (just after `[`); returns it and the index after `]`."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    first = True

    def member(at: int) -> tuple[str, int]:
        if pattern[at] == "\\" and at + 1 < n:
            return pattern[at + 1], at + 2
        return pattern[at], at + 1

    while True:
        if i >= n:
            raise ContextError(f"syntax error in pattern {pattern!r}: unclosed '['")
        if pattern[i] == "]" and not first:
            return CharTest(frozenset(chars), tuple(ranges), negate), i + 1
        first = False
        low, i = member(i)
        if i + 1 < n and pattern[i] == "-" and pattern[i + 1] != "]":
            high, i = member(i + 1)
            if high < low:
                raise ContextError(f"syntax error in pattern {pattern!r}: bad range {low}-{high}")
            ranges.append((low, high))
        else:
            chars.add(low)


def _unescape(component: str) -> str:
    return re.sub(r"\\(.)", r"\1", component)


def component_matcher(component: str) -> Matcher | None:
    """How a COPY source component matches names: a Go `filepath.Match` matcher when it holds a
    wildcard, else None (it then names one entry, `unescape_component(component)`). An invalid
    pattern is a ContextError."""
    return _go_match_pattern(component) if contains_wildcards(component) else None


def unescape_component(component: str) -> str:
    return _unescape(component)


def kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


@dataclass(frozen=True)
class Selected:
    """One source matched by a COPY/ADD pattern."""

    source: str  # the pattern as written
    relpath: str  # path relative to the root, symlinks resolved (a followed source's too); "." = root
    logical: str  # the path as the pattern spelled it (matched names), used by --parents
    path: Path  # host path of the entry; its last component is never followed
    kind: str  # dir | file | symlink | other
    from_glob: bool  # matched through a wildcard
    pivot: int = 0  # leading components of `logical` that --parents drops (the `/./` marker)
    context: "BuildContext | None" = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return posixpath.basename(self.logical) if self.logical != "." else ""

    @property
    def parents_path(self) -> str:
        """The part of the source path that `COPY --parents` recreates under the destination."""
        parts = [p for p in self.logical.split("/") if p not in ("", ".")]
        return "/".join(parts[self.pivot :])


@dataclass(frozen=True)
class Entry:
    """One file system object inside a selection, met while walking it in sorted order."""

    relpath: str  # relative to the selected entry; "." for the entry itself
    ctx_relpath: str  # relative to the root
    path: Path
    st: os.stat_result

    @property
    def kind(self) -> str:
        return kind_of(self.st.st_mode)


def _entry_name(entry: os.DirEntry) -> str:
    return entry.name


def _dir_prefix(host_dir: str) -> str:
    """`host_dir` ending in one `/`, for joining names onto it (the root "/" stays "/")."""
    return host_dir if host_dir.endswith("/") else host_dir + "/"


def hash_file(path: Path | str) -> str:
    """sha256 hex of a regular file's bytes, streamed; never follows a symlink."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_xattrs(path: Path | str) -> list[tuple[str, bytes]]:
    """Sorted extended attributes of `path` itself (overlay bookkeeping left out)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        if name.startswith(SKIPPED_XATTR_PREFIXES):
            continue
        try:
            found.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return found


class BuildContext:
    """A source root for COPY/ADD with Docker's visibility and containment rules."""

    def __init__(
        self,
        root: Path,
        ignore: IgnoreMatcher | None = None,
        *,
        chroot: bool = False,
        label: str | None = None,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.ignore = ignore if ignore is not None else IgnoreMatcher.empty()
        self.chroot = chroot
        self.label = label or ("stage rootfs" if chroot else "build context")
        if not self.root.is_dir():
            raise ContextError(f"{self.label} {str(root)!r} is not a directory")

    @classmethod
    def for_rootfs(cls, root: Path, label: str = "stage rootfs") -> "BuildContext":
        """Another stage's flattened rootfs (`COPY --from`): nothing ignored, chroot-like links."""
        return cls(root, IgnoreMatcher.empty(), chroot=True, label=label)

    @property
    def preserves_owner(self) -> bool:
        """Docker resets context files to 0:0 when it receives them; a rootfs keeps its owners."""
        return self.chroot

    # visibility -------------------------------------------------------------------------------

    def _host(self, relpath: str) -> Path:
        return self.root if relpath in ("", ".") else self.root / relpath

    def visible(self, relpath: str, st: os.stat_result | None = None) -> bool:
        """Whether Docker would have sent `relpath`: not ignored, or an ignored directory that an
        exception names below it, and no ancestor is an ignored directory the walk skips."""
        if not self.ignore or relpath in ("", "."):
            return True
        parts = relpath.split("/")
        for end in range(1, len(parts)):
            ancestor = "/".join(parts[:end])
            if self.ignore.ignored(ancestor, is_dir=True) and not self.ignore.may_contain_exceptions(ancestor):
                return False
        return self._visible_here(relpath, st)

    def _visible_here(self, relpath: str, st: os.stat_result | None = None) -> bool:
        """`visible` for a path whose ancestors are known to be visible (a walk's children).

        Docker's context walk (fsutil) skips an ignored directory unless an exception pattern
        starts with its path and a `/`; a directory it enters is sent itself, even when nothing
        below is re-included."""
        if not self.ignore or relpath in ("", "."):
            return True
        if st is None:
            try:
                st = os.lstat(self._host(relpath))
            except OSError:
                return False
        is_dir = stat.S_ISDIR(st.st_mode)
        if not self.ignore.ignored(relpath, is_dir=is_dir):
            return True
        return is_dir and self.ignore.may_contain_exceptions(relpath)

    # resolution -------------------------------------------------------------------------------

    def _outbound(self, pattern: str, link: str, target: str, pos: Pos | None) -> ContextError:
        return ContextError(
            f'source path "{pattern}" goes through symlink "{link}" -> "{target}",'
            f" which points outside the {self.label}",
            pos=pos,
            hint="symlinks are never followed out of the build context;"
            " copy the target into the context or use a path inside it",
        )

    def _resolve_dir(self, parts: Sequence[str], pattern: str, pos: Pos | None) -> list[str] | None:
        """Follow `parts` from the root as directories, symlinks resolved inside the root.

        Returns the resolved components, or None when a component is missing or not a directory.
        """
        found = self._resolve(parts, pattern, pos, leaf_may_be_file=False)
        return None if found is None else found[0]

    def resolve(self, path: str, *, pos: Pos | None = None) -> Selected:
        """The entry `path` names, every symlink on the way *and the last one* followed inside the
        root (what a RUN bind mount's source means: BuildKit resolves it within the snapshot).
        No wildcards. A missing entry is a ContextError; a link out of a context is one too."""
        parts, _ = self._clean_pattern(path, pos)
        found = self._resolve(parts, path, pos, leaf_may_be_file=True)
        if found is None:
            raise self._not_found(path, None, pos)
        resolved, st = found
        relpath = "/".join(resolved) or "."
        if not self.visible(relpath, st):
            raise self._not_found(path, relpath, pos)
        return Selected(path, relpath, "/".join(parts) or ".", self._host(relpath), kind_of(st.st_mode), False, 0, self)

    def _resolve(
        self, parts: Sequence[str], pattern: str, pos: Pos | None, *, leaf_may_be_file: bool
    ) -> tuple[list[str], os.stat_result] | None:
        """Walk `parts` from the root with every symlink (the last one too) resolved inside it, as
        BuildKit resolves a source (continuity's RootPath): an absolute target starts again at the
        root, `..` stops at the root; never a host path. (In a context, an absolute target naming
        the context's own host path means that path inside.) Every component but the last must be
        a directory; the last may be anything if `leaf_may_be_file`. Returns the resolved
        components and the lstat of what they name, or None when something is missing or not a
        directory; when a link of a context pointed out of it, that is the error instead."""
        resolved: list[str] = []
        queue = [p for p in parts if p not in ("", ".")]
        hops = 0
        link_name, link_target = "", ""
        escaped = False  # a context link pointed out, and was taken as the same path inside

        def missing() -> None:
            if escaped:
                raise self._outbound(pattern, link_name, link_target, pos)

        while queue:
            name = queue.pop(0)
            if name in ("", "."):
                continue
            if name == "..":  # only link targets hold `..` here: patterns are cleaned first
                if resolved:
                    resolved.pop()
                else:
                    escaped = escaped or not self.chroot
                continue
            host = self.root.joinpath(*resolved, name)
            try:
                st = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                missing()
                return None
            except OSError as exc:
                raise ContextError(
                    f'cannot read "{"/".join([*resolved, name])}" in the {self.label}: {exc.strerror}',
                    pos=pos,
                ) from None
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise ContextError(
                        f'source path "{pattern}": too many levels of symbolic links', pos=pos
                    )
                target = os.readlink(host)
                link_name, link_target = "/".join([*resolved, name]), target
                if target.startswith("/"):
                    resolved = []
                    root = str(self.root)
                    if not self.chroot and (target == root or target.startswith(root + "/")):
                        target = target[len(root) :]
                    else:
                        escaped = escaped or not self.chroot
                queue = [p for p in target.split("/") if p not in ("", ".")] + queue
                continue
            if not stat.S_ISDIR(st.st_mode) and not (leaf_may_be_file and not queue):
                missing()
                return None
            resolved.append(name)
        # Links and `..` may have ended anywhere: stat where the walk stopped (never a link).
        return resolved, os.lstat(self._host("/".join(resolved)))

    def _clean_pattern(self, pattern: str, pos: Pos | None) -> tuple[list[str], int]:
        """Lexical clean of a source pattern; returns its components and the --parents pivot."""
        raw = pattern.lstrip("/")
        pivot_prefix = None
        if "/./" in raw:
            pivot_prefix = raw[: raw.index("/./")]
        depth = 0
        for part in raw.split("/"):
            if part == "..":
                depth -= 1
                if depth < 0 and not self.chroot:
                    raise ContextError(
                        f'forbidden path outside the {self.label}: "{pattern}"',
                        pos=pos,
                        hint="COPY/ADD sources are relative to the context root and cannot use .. to leave it",
                    )
                depth = max(depth, 0)
            elif part not in ("", "."):
                depth += 1
        cleaned = go_clean("/" + raw)[1:]
        parts = [p for p in cleaned.split("/") if p]
        pivot = 0
        if pivot_prefix is not None:
            pivot = len([p for p in go_clean("/" + pivot_prefix)[1:].split("/") if p])
        return parts, pivot

    def _not_found(self, pattern: str, relpath: str | None, pos: Pos | None) -> ContextError:
        hint = f"source paths are relative to the root of the {self.label} ({self.root})"
        if relpath is not None and self.ignore:
            host = self._host(relpath)
            if os.path.lexists(host):
                source = self.ignore.source or ".dockerignore"
                hint = f'"{relpath}" exists but is excluded by {source}; remove the pattern or add an exception "!{relpath}"'
        return ContextError(f'file not found in {self.label}: "{pattern}"', pos=pos, hint=hint)

    def _dangling(self, pattern: str, link: str, pos: Pos | None) -> ContextError:
        target = os.readlink(self._host(link))
        return ContextError(
            f'file not found in {self.label}: "{pattern}": symlink "{link}" -> "{target}" points to nothing'
            f" in the {self.label}",
            pos=pos,
            hint="a symlink given as a source is followed (as BuildKit does) inside the"
            f" {self.label}; its target must exist there and not be excluded by .dockerignore",
        )

    def select(
        self,
        patterns: Sequence[str],
        *,
        pos: Pos | None = None,
        allow_missing_wildcard: bool = True,
        follow_links: bool = True,
    ) -> list[Selected]:
        """The entries COPY/ADD sources name, in pattern order then sorted match order.

        With `follow_links` (BuildKit's COPY), a source that is a symlink, named or matched by a
        wildcard, stands for what it points to inside the root: its content is copied under the
        link's name. A dangling one, or one whose target is ignored, is an error."""
        selected: list[Selected] = []
        for pattern in patterns:
            selected.extend(self._select_one(pattern, pos, allow_missing_wildcard, follow_links))
        return selected

    def _followed(self, item: Selected, pos: Pos | None) -> Selected:
        """`item` itself unless it is a symlink: then what it points to, under the link's name."""
        if item.kind != "symlink":
            return item
        found = self._resolve(item.relpath.split("/"), item.source, pos, leaf_may_be_file=True)
        if found is None:
            raise self._dangling(item.source, item.relpath, pos)
        resolved, st = found
        relpath = "/".join(resolved) or "."
        if not self.visible(relpath, st):
            raise self._dangling(item.source, item.relpath, pos)
        return Selected(item.source, relpath, item.logical, self._host(relpath), kind_of(st.st_mode),
                        item.from_glob, item.pivot, self)

    def _select_one(
        self, pattern: str, pos: Pos | None, allow_missing_wildcard: bool, follow_links: bool
    ) -> list[Selected]:
        found = self._select_unfollowed(pattern, pos, allow_missing_wildcard)
        return [self._followed(item, pos) for item in found] if follow_links else found

    def _select_unfollowed(self, pattern: str, pos: Pos | None, allow_missing_wildcard: bool) -> list[Selected]:
        parts, pivot = self._clean_pattern(pattern, pos)
        wild_at = next((i for i, part in enumerate(parts) if contains_wildcards(part)), None)
        if not parts:
            return [Selected(pattern, ".", ".", self.root, "dir", False, 0, self)]
        if wild_at is None:
            parent = self._resolve_dir(parts[:-1], pattern, pos)
            if parent is None:
                raise self._not_found(pattern, "/".join(parts), pos)
            relpath = "/".join([*parent, parts[-1]])
            host = self.root / relpath
            try:
                st = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                raise self._not_found(pattern, None, pos) from None
            if not self.visible(relpath, st):
                raise self._not_found(pattern, relpath, pos)
            return [
                Selected(pattern, relpath, "/".join(parts), host, kind_of(st.st_mode), False, pivot, self)
            ]
        # BuildKit walks the part before the first wildcard: missing, it is an error (even when
        # no match is allowed); not a directory, it matches nothing.
        found = self._resolve(parts[:wild_at], pattern, pos, leaf_may_be_file=True)
        if found is None:
            raise self._not_found(pattern, "/".join(parts[:wild_at]), pos)
        base = found[0] if stat.S_ISDIR(found[1].st_mode) else None
        matches: list[Selected] = []
        if base is not None:
            try:
                matchers = [
                    _go_match_pattern(part) if contains_wildcards(part) else None for part in parts[wild_at:]
                ]
            except ContextError as exc:
                raise ContextError(
                    f'invalid wildcard in source "{pattern}": {exc.message}',
                    pos=pos,
                    hint="wildcards follow Go filepath.Match: * ? [a-z] [^a] and \\ to escape",
                ) from None
            literal = [_unescape(part) for part in parts[wild_at:]]
            if self.visible("/".join(base)):
                self._glob(base, parts[:wild_at], matchers, literal, pattern, pivot, matches)
        if not matches and not allow_missing_wildcard:
            raise ContextError(
                f'no source files were specified: "{pattern}" matches nothing in the {self.label}',
                pos=pos,
                hint="check the wildcard, and that .dockerignore does not exclude the files",
            )
        return matches

    def _glob(
        self,
        resolved: list[str],
        logical: list[str],
        matchers: list[Matcher | None],
        literal: list[str],
        pattern: str,
        pivot: int,
        out: list[Selected],
    ) -> None:
        host_dir = self.root.joinpath(*resolved)
        try:
            names = sorted(os.listdir(host_dir))
        except OSError:
            return
        matcher, last = matchers[0], len(matchers) == 1
        for name in names:
            if matcher is None:
                if name != literal[0]:
                    continue
            elif not matcher.fullmatch(name):
                continue
            relpath = "/".join([*resolved, name])
            try:
                st = os.lstat(host_dir / name)
            except OSError:
                continue
            if not self._visible_here(relpath, st):
                continue
            if last:
                out.append(
                    Selected(
                        pattern, relpath, "/".join([*logical, name]), host_dir / name,
                        kind_of(st.st_mode), True, pivot, self,
                    )
                )
            elif stat.S_ISDIR(st.st_mode):  # like filepath.Walk: never descend through a link
                self._glob([*resolved, name], [*logical, name], matchers[1:], literal[1:], pattern, pivot, out)

    # walking ----------------------------------------------------------------------------------

    def walk(self, selected: Selected) -> Iterator[Entry]:
        """The selected entry, then (for a dir) every visible entry below it, in sorted path order."""
        st = os.lstat(selected.path)
        yield Entry(".", selected.relpath, selected.path, st)
        if stat.S_ISDIR(st.st_mode):
            yield from self._walk_dir(str(selected.path), selected.relpath, "")

    def list_dir(self, host_dir: str, ctx_rel: str) -> list[tuple[str, os.stat_result]]:
        """Visible direct children of a dir as (name, lstat), sorted by name; `ctx_rel` is the
        dir's path relative to the root ("" or "." for the root).

        One scandir pass: names and stat results only, no path objects (a big context has tens of
        thousands of entries, and both the key and the copy list every dir). An ignored dir is
        listed only while it still holds a re-included path (Docker keeps it to hold that path)."""
        try:
            with os.scandir(host_dir) as listing:
                entries = sorted(listing, key=_entry_name)
        except OSError as exc:
            raise ContextError(
                f'cannot read directory "{ctx_rel}" in the {self.label}: {exc.strerror}',
                hint="make it readable or exclude it in .dockerignore",
            ) from None
        children = []
        prefix = "" if ctx_rel in ("", ".") else ctx_rel + "/"
        ignore = self.ignore
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if ignore and not self._visible_here(prefix + entry.name, st):
                continue
            children.append((entry.name, st))
        return children

    def _walk_dir(self, host_dir: str, ctx_rel: str, sel_rel: str) -> Iterator[Entry]:
        prefix = "" if ctx_rel in ("", ".") else ctx_rel + "/"
        base = _dir_prefix(host_dir)
        for name, st in self.list_dir(host_dir, ctx_rel):
            child_sel = name if not sel_rel else f"{sel_rel}/{name}"
            host = base + name
            yield Entry(child_sel, prefix + name, Path(host), st)
            if stat.S_ISDIR(st.st_mode):
                yield from self._walk_dir(host, prefix + name, child_sel)

    # digest -----------------------------------------------------------------------------------

    def owner_of(self, st: os.stat_result) -> tuple[int, int]:
        return (st.st_uid, st.st_gid) if self.preserves_owner else (0, 0)

    def content_digest(self, selected: Sequence[Selected], stat_cache: "StatCache | None" = None) -> str:
        """Merkle sha256 of everything the selection would copy; see module `content_digest`."""
        top = hashlib.sha256(b"builder-context-digest-v1\n")
        for item in selected:
            try:
                node = self._node_digest(item.path, item.relpath, stat_cache)
            except OSError as exc:
                raise ContextError(
                    f'cannot read "{exc.filename or item.relpath}" in the {self.label}: {exc.strerror or exc}',
                    hint="make the files readable (or exclude them) and do not change them during the build",
                ) from None
            # A followed link copies its target under its own name: the name is part of the result.
            shown = item.relpath if item.logical == item.relpath else f"{item.logical}\0{item.relpath}"
            top.update(f"{shown}\0{node}\n".encode("utf-8", "surrogateescape"))
        if stat_cache is not None:
            stat_cache.flush()
        return "sha256:" + top.hexdigest()

    def _file_sha(self, path: Path | str, st: os.stat_result, stat_cache: "StatCache | None",
                  known: "dict[tuple[int, int], Known] | None" = None,
                  xattrs: list[tuple[str, bytes]] | None = None) -> str:
        if known is not None:
            found = known.get((st.st_dev, st.st_ino))
            if found is not None:
                return found[0]
        elif stat_cache is not None:
            cached = stat_cache.lookup(st)
            if cached is not None:
                return cached
        try:
            # Looked up through the module so tests can count real reads.
            digest = globals()["hash_file"](path)
        except OSError as exc:
            raise ContextError(
                f'cannot read "{path}" in the {self.label}: {exc.strerror}',
                hint="make the file readable or exclude it in .dockerignore",
            ) from None
        if stat_cache is not None:
            stat_cache.remember(st, digest, xattrs)
        return digest

    def _node_digest(self, path: Path | str, ctx_rel: str, stat_cache: "StatCache | None",
                     st: os.stat_result | None = None, known: "dict[tuple[int, int], Known] | None" = None) -> str:
        if st is None:
            st = os.lstat(path)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            return self._dir_digest(str(path), ctx_rel, stat_cache, st)
        h = self._node_head(st)
        cached = known.get((st.st_dev, st.st_ino)) if known is not None and stat.S_ISREG(mode) else None
        # A file the stat cache knows comes with its xattrs: no listxattr call for it.
        xattrs = cached[1] if cached is not None and cached[1] is not None else read_xattrs(path)
        _hash_xattrs(h, xattrs)
        if stat.S_ISREG(mode):
            if cached is not None and cached[1] is None and stat_cache is not None:
                # Known from a cache entry without xattrs: record them now, with the same digest.
                stat_cache.remember(st, cached[0], xattrs)
            h.update(b"c\0" + self._file_sha(path, st, stat_cache, known, xattrs).encode())
        elif stat.S_ISLNK(mode):
            h.update(b"l\0" + os.fsencode(os.readlink(path)))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            h.update(f"d\0{os.major(st.st_rdev)}\0{os.minor(st.st_rdev)}".encode())
        return h.hexdigest()

    def _node_head(self, st: os.stat_result) -> "hashlib._Hash":
        """A node's digest so far: its kind, permission bits and the owner a COPY gives it."""
        mode = st.st_mode
        uid, gid = self.owner_of(st)
        h = hashlib.sha256()
        h.update(f"{kind_of(mode)}\0{stat.S_IFMT(mode):o}\0{stat.S_IMODE(mode):o}\0{uid}\0{gid}\0".encode())
        return h

    def _dir_digest(self, path: str, ctx_rel: str, stat_cache: "StatCache | None", st: os.stat_result) -> str:
        """A dir's digest; with a stat cache, taken whole from it while nothing in the dir moved.

        Subdirectories are digested first (a change deep inside does not show in this dir's
        stats); then the dir's own stat, its visible children's stats and the subdirectories'
        digests make a signature. While it matches the one recorded with the digest (ctime moves
        on every write, chmod, chown, xattr change and rename), the files are not looked at one
        by one: a warm build of a big context costs a scandir per dir."""
        children = self.list_dir(path, ctx_rel)
        prefix = "" if ctx_rel in ("", ".") else ctx_rel + "/"
        base = _dir_prefix(path)
        subdirs = {name: self._dir_digest(base + name, prefix + name, stat_cache, child_st)
                   for name, child_st in children if stat.S_ISDIR(child_st.st_mode)}
        signature = None
        if stat_cache is not None:
            signature = _dir_signature(st, children, subdirs, self.preserves_owner)
            found = stat_cache.lookup_dir(st, signature)
            if found is not None:
                return found
        h = self._node_head(st)
        _hash_xattrs(h, read_xattrs(path))
        # The stat cache is asked once for the whole directory, not once per file.
        files = [child_st for _, child_st in children if stat.S_ISREG(child_st.st_mode)]
        known_here = stat_cache.lookup_many(files) if stat_cache is not None and files else {}
        for name, child_st in children:
            child = subdirs.get(name) or self._node_digest(base + name, prefix + name, stat_cache, child_st,
                                                           known_here)
            h.update(b"e\0" + os.fsencode(name) + b"\0" + child.encode() + b"\n")
        digest = h.hexdigest()
        if stat_cache is not None and signature is not None:
            stat_cache.remember_dir(st, signature, digest)
        return digest


def _hash_xattrs(h: "hashlib._Hash", xattrs: list[tuple[str, bytes]]) -> None:
    for name, value in xattrs:
        h.update(b"x\0" + name.encode() + b"\0" + value.hex().encode() + b"\0")


def _dir_signature(st: os.stat_result, children: list[tuple[str, os.stat_result]], subdirs: dict[str, str],
                   preserves_owner: bool) -> str:
    """What a dir's digest depends on, as stats: its own, each visible child's (a subdirectory by
    its digest), and whether owners count."""
    parts = [f"v1\0{int(preserves_owner)}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"]
    for name, child in children:
        sub = subdirs.get(name)
        if sub is not None:
            parts.append(f"{name}\0d\0{sub}")
        else:
            parts.append(f"{name}\0{child.st_ino}\0{child.st_mode}\0{child.st_size}\0{child.st_mtime_ns}"
                         f"\0{child.st_ctime_ns}\0{child.st_uid}\0{child.st_gid}\0{child.st_rdev}")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def content_digest(selected: Sequence[Selected], stat_cache: "StatCache | None" = None) -> str:
    """Merkle sha256 over a selection: for every entry (recursively, sorted) its relative path,
    type, permission bits (setuid/setgid/sticky included), the owner COPY would give it, symlink
    target, device numbers, sorted xattrs (overlay ones skipped) and content sha256.
    mtime, ctime, atime and inode numbers never count, and ignored files are never seen."""
    if not selected:
        return "sha256:" + hashlib.sha256(b"builder-context-digest-v1\n").hexdigest()
    context = selected[0].context
    assert context is not None, "Selected made outside BuildContext.select"
    return context.content_digest(selected, stat_cache)
