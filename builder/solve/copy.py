"""COPY/ADD: write exactly the files a layer must contain into an empty staging dir.

The staging dir is laid out as absolute image paths (`/app/x` is `staging_dir/app/x`) in the
"overlay-upper format", so the layer writer turns it into a tar as it is.

Docker facts followed (Dockerfile reference, BuildKit dockerfile2llb and fsutil copy):
* the destination is relative to WORKDIR. As BuildKit (fsutil's Copy, once per source) does,
  every source (each wildcard match, file sources in order, then heredocs) is copied onto it in
  turn: into it when it is a directory at that moment (written with a trailing `/` or `.`, a
  directory in the image, asked through `dest_is_dir`, or made by an earlier source), otherwise
  onto its path, so of several files the last one wins (`COPY target/*.jar app.jar` makes
  /app.jar). No error for several sources and no trailing `/` (that is the classic builder's);
  wildcards that match nothing copy nothing and create nothing;
* a source that is a symlink (named, or matched by a wildcard) is followed inside its root, as
  BuildKit's FollowSymlinks does: its target's content is copied under the link's name (a link
  to a directory copies that directory's contents); links inside a copied directory stay links;
* a directory source copies its *contents*; the destination dir is created 0755;
* missing parents are created 0755 and, as fsutil's MkdirAll does, owned by the `--chown` user
  (root without it); parents that exist in the image keep the image's metadata when the caller
  gives `image_dir_meta`;
* without `--chown`, files from the build context become 0:0 (Docker resets context owners) and
  files from another stage (`COPY --from`) keep their owners; `--chown` applies to every copied
  entry and every created dir; `--chmod` (octal or symbolic) to every copied file and dir, not to
  created parents or symlinks;
* permission bits (setuid/setgid/sticky too), mtimes, xattrs (overlay ones excepted), symlinks
  below a copied directory (as links) and hard links within one instruction are preserved;
* heredoc sources become 0644 files named after the delimiter in a destination directory;
* ADD: a local tar (any supported compression) is extracted into the destination directory with
  the archive's owners unless `--chown`; an http(s) URL is downloaded (0600, mtime from
  Last-Modified, name from the URL path, `--checksum=sha256:` verified) and never extracted.

Times this instruction invents (created dirs, heredoc files, downloads without Last-Modified)
are SOURCE_DATE_EPOCH or 0, never "now", so the same inputs give the same layer.
"""
from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import shutil
import stat
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from builder.context.dockerignore import IgnoreMatcher, go_clean
from builder.context.tree import SKIPPED_XATTR_PREFIXES as _SKIPPED_XATTRS
from builder.context.tree import BuildContext, Selected, read_xattrs
from builder.errors import ArchiveError, ContextError, Pos
from builder.solve.archive import extract_tar, is_tar_archive

_COPY_BUFFER = 1 << 20
_URL_RE = re.compile(r"^https?://", re.IGNORECASE)
_GIT_RE = re.compile(r"^(git@|git://|ssh://)|\.git(#.*)?$")


def is_git_source(source: str) -> bool:
    """An ADD source BuildKit would clone: git@host:..., git://, ssh://, or a URL ending in .git[#ref]."""
    return source.startswith("git@") or ("://" in source and bool(_GIT_RE.search(source)))


def git_source_error(source: str, pos: Pos | None) -> ContextError:
    return ContextError(
        f'ADD from a git repository is not supported: "{source}"',
        pos=pos,
        hint="clone the repository into the build context and COPY it",
    )


@dataclass(frozen=True)
class DirMeta:
    """Metadata of a directory that already exists in the parent image."""

    mode: int  # permission bits
    uid: int
    gid: int
    mtime_ns: int


@dataclass
class CopyResult:
    """What a COPY/ADD wrote: image paths, sorted."""

    paths: list[str] = field(default_factory=list)


# --chmod ---------------------------------------------------------------------------------------


def parse_chmod(spec: str | None, pos: Pos | None = None) -> Callable[[int, bool], int] | None:
    """`--chmod` as a function (current permission bits, is_dir) -> new bits.

    Octal (`755`, `0644`, `4755`) sets the bits; symbolic (`u+x,go-w`, `a=rX`) edits them like
    chmod(1)."""
    if spec is None or spec == "":
        return None
    if re.fullmatch(r"[0-7]{1,4}", spec):
        value = int(spec, 8)
        return lambda _mode, _is_dir: value
    clauses = spec.split(",")
    parsed = []
    for clause in clauses:
        match = re.fullmatch(r"([ugoa]*)([+\-=])([rwxXst]*)", clause)
        if not match:
            raise ContextError(
                f'invalid --chmod value "{spec}"',
                pos=pos,
                hint="use octal like 0755 or symbolic like u+x,go-w",
            )
        parsed.append(match.groups())

    def apply(mode: int, is_dir: bool) -> int:
        for who, op, perms in parsed:
            who = who or "a"
            if "a" in who:
                who = "ugo"
            bits = 0
            had_exec = bool(mode & 0o111)
            for p in perms:
                for w in who:
                    shift = {"u": 6, "g": 3, "o": 0}[w]
                    if p == "r":
                        bits |= 0o4 << shift
                    elif p == "w":
                        bits |= 0o2 << shift
                    elif p == "x" or (p == "X" and (is_dir or had_exec)):
                        bits |= 0o1 << shift
                    elif p == "s" and w in "ug":
                        bits |= stat.S_ISUID if w == "u" else stat.S_ISGID
                    elif p == "t" and w == "o":
                        bits |= stat.S_ISVTX
            if op == "+":
                mode |= bits
            elif op == "-":
                mode &= ~bits
            else:
                mask = 0
                for w in who:
                    mask |= 0o7 << {"u": 6, "g": 3, "o": 0}[w]
                    mask |= {"u": stat.S_ISUID, "g": stat.S_ISGID, "o": stat.S_ISVTX}[w]
                mode = (mode & ~mask) | bits
        return mode & 0o7777

    return apply


# the staging tree ------------------------------------------------------------------------------


class StagingTree:
    """Writes under `root` by image path, never through a symlink, and keeps dir metadata to the end.

    Directory mtimes change whenever an entry is added inside, so they are applied last."""

    def __init__(
        self,
        root: Path,
        *,
        created_owner: tuple[int, int],
        created_mtime_ns: int,
        image_dir_meta: Callable[[str], DirMeta | None] | None,
        image_node: Callable[[str], tuple[str, str | None] | None] | None = None,
        time_of: Callable[[int], int] | None = None,
    ) -> None:
        self.root = Path(root)
        # The mtime (ns) to write for a source mtime: the same, or the layer's (see layer_time_of).
        self.time_of = time_of or _same_time
        self.image_node = image_node
        self.root_text = str(self.root)
        self.created_owner = created_owner
        self.created_mtime_ns = created_mtime_ns
        self.image_dir_meta = image_dir_meta
        self._dir_times: dict[str, int] = {}
        self.written: set[str] = set()
        # Image paths seen to be real directories here. Nothing in this tree replaces a directory
        # (prepare_target refuses to), so once seen, no lstat is needed for them again: copying
        # 10,000 files costs a syscall or two less per path component.
        self._dirs: set[str] = {"/"}

    @staticmethod
    def clean(image_path: str) -> str:
        return go_clean("/" + image_path.lstrip("/"))

    def host_path(self, image_path: str) -> Path:
        """The staging path of `image_path`; every existing parent must be a real directory."""
        return Path(self._host(self.clean(image_path)))

    def _host(self, clean: str) -> str:
        if posixpath.dirname(clean) in self._dirs:
            return self.root_text + clean
        parts = [p for p in clean.split("/") if p]
        for index in range(len(parts) - 1):
            sub = "/" + "/".join(parts[: index + 1])
            if sub in self._dirs:
                continue
            try:
                st = os.lstat(self.root_text + sub)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                raise ValueError(f'path "{clean}" goes through "{sub}", a symlink written by this same instruction')
            if not stat.S_ISDIR(st.st_mode):
                raise ValueError(f'path "{clean}" needs "{sub}" to be a directory')
            self._dirs.add(sub)
        return self.root_text + clean

    def is_dir(self, image_path: str) -> bool:
        """Whether `image_path` is a real directory in the staging tree (links not followed)."""
        clean = self.clean(image_path)
        if clean in self._dirs:
            return True
        try:
            found = stat.S_ISDIR(os.lstat(self._host(clean)).st_mode)
        except FileNotFoundError:
            return False
        if found:
            self._dirs.add(clean)
        return found

    def record(self, image_path: str) -> None:
        self.written.add(self.clean(image_path))

    def node(self, image_path: str) -> tuple[str, str | None] | None:
        """What is at `image_path` (its parents resolved by the caller) once this instruction's
        writes lie over the image: ("dir" | "link" | "other", the link's target), or None.
        Links are read from the staging tree or asked of the image, never followed on the host."""
        clean = self.clean(image_path)
        try:
            st = os.lstat(self._host(clean))
        except (FileNotFoundError, NotADirectoryError):
            return self.image_node(clean) if self.image_node is not None else None
        if stat.S_ISLNK(st.st_mode):
            return "link", os.readlink(self._host(clean))
        return ("dir" if stat.S_ISDIR(st.st_mode) else "other"), None

    def ensure_dir(self, image_path: str) -> Path:
        """Create `image_path` and its missing parents (0755, created owner, or image metadata)."""
        clean = self.clean(image_path)
        if clean in self._dirs:
            return Path(self.root_text + clean) if clean != "/" else self.root
        parts = [p for p in clean.split("/") if p]
        current = self.root
        for index in range(len(parts)):
            sub = "/" + "/".join(parts[: index + 1])
            current = current / parts[index]
            if sub in self._dirs:
                continue
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                st = None
            if st is not None:
                if stat.S_ISDIR(st.st_mode):
                    self._dirs.add(sub)
                    continue
                if stat.S_ISLNK(st.st_mode):
                    raise ValueError(f'path "{clean}" goes through "{sub}", a symlink written by this same instruction')
                raise ValueError(f'cannot create directory "{sub}": a file was copied there')
            os.mkdir(current, 0o700)
            self._dirs.add(sub)
            meta = self.image_dir_meta(sub) if self.image_dir_meta else None
            if meta is not None:
                os.chown(current, meta.uid, meta.gid)
                os.chmod(current, meta.mode & 0o7777)
                self._dir_times[sub] = meta.mtime_ns
            else:
                os.chown(current, *self.created_owner)
                os.chmod(current, 0o755)
                self._dir_times[sub] = self.created_mtime_ns
            self.record(sub)
        return current

    def prepare_target(self, image_path: str, *, replace_dir: bool) -> Path:
        """The host path to create a non-dir entry at (an old file there is removed)."""
        clean = self.clean(image_path)
        host = self._host(clean)
        if clean not in self.written:
            # Only what this copy wrote can be in the way: the staging tree starts empty.
            return Path(host)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            return Path(host)
        if stat.S_ISDIR(st.st_mode):
            if not replace_dir:
                return Path(host)
            raise ValueError(f'cannot replace directory "{clean}" with a file')
        os.unlink(host)
        return Path(host)

    def remove_dir(self, image_path: str) -> None:
        """Remove a directory this instruction wrote, with everything below it (an ADD archive's
        non-directory entry replaces a directory, as Docker's untar does)."""
        clean = self.clean(image_path)
        host = self._host(clean)
        if not stat.S_ISDIR(os.lstat(host).st_mode):
            raise ValueError(f'"{clean}" is not a directory')
        shutil.rmtree(host)
        inside = clean.rstrip("/") + "/"
        self.written = {p for p in self.written if p != clean and not p.startswith(inside)}
        self._dirs = {p for p in self._dirs if p != clean and not p.startswith(inside)}
        self._dir_times = {p: t for p, t in self._dir_times.items() if p != clean and not p.startswith(inside)}

    def set_dir_meta(self, image_path: str, mode: int, uid: int, gid: int, mtime_ns: int) -> None:
        host = self.host_path(image_path)
        os.chown(host, uid, gid)
        os.chmod(host, mode & 0o7777)
        self._dir_times[self.clean(image_path)] = mtime_ns

    def finish(self) -> None:
        """Apply directory mtimes, deepest first, once nothing more is added."""
        for sub in sorted(self._dir_times, key=lambda p: p.count("/"), reverse=True):
            host = self.root / sub.lstrip("/")
            if host.is_dir() and not host.is_symlink():
                ns = self.time_of(self._dir_times[sub])
                os.utime(host, ns=(ns, ns), follow_symlinks=False)


def _same_time(ns: int) -> int:
    return ns


def layer_time_of(source_date_epoch: int | None) -> Callable[[int], int]:
    """A source mtime (ns) -> the one a layer records: whole seconds (floored), clamped to the
    epoch when one is set (builder.layer.tarwrite.layer_mtime, which the store applies to a
    committed layer dir)."""

    def time_of(ns: int) -> int:
        seconds = ns // 1_000_000_000
        if source_date_epoch is not None and seconds > source_date_epoch:
            seconds = source_date_epoch
        return seconds * 1_000_000_000

    return time_of


# the copy itself ---------------------------------------------------------------------------------


def process_umask() -> int | None:
    """This process's umask, read without changing it (os.umask would, for every thread), or None
    where /proc does not say."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class _Options:
    context: BuildContext
    staging: StagingTree
    chown: tuple[int, int] | None
    chmod: Callable[[int, bool], int] | None
    exclude: IgnoreMatcher
    pos: Pos | None
    hardlinks: dict[tuple[int, int], Path] = field(default_factory=dict)
    on_copied: Callable[[int], None] | None = None  # bytes of each regular file copied, for progress
    umask: int | None = field(default_factory=process_umask)


def _owner(opts: _Options, st: os.stat_result) -> tuple[int, int]:
    if opts.chown is not None:
        return opts.chown
    return opts.context.owner_of(st)


def _copy_xattrs(src: Path | str, dst: Path) -> None:
    for name, value in read_xattrs(src):
        try:
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError:
            pass  # e.g. trusted.* without the capability: the content still lands


def _copy_entry(opts: _Options, src: Path, st: os.stat_result, image_path: str) -> None:
    """Copy one non-dir entry (file, symlink, device, fifo) to `image_path`."""
    staging = opts.staging
    staging.ensure_dir(posixpath.dirname(staging.clean(image_path)))
    host = staging.prepare_target(image_path, replace_dir=True)
    uid, gid = _owner(opts, st)
    mode = stat.S_IMODE(st.st_mode)
    if opts.chmod is not None and not stat.S_ISLNK(st.st_mode):
        mode = opts.chmod(mode, False)
    if stat.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino)
        first = opts.hardlinks.get(key) if st.st_nlink > 1 else None
        if first is not None and first.exists():
            os.link(first, host, follow_symlinks=False)
            staging.record(image_path)
            return
        _copy_file(src, host, uid, gid, mode, staging.time_of(st.st_mtime_ns))
        if opts.on_copied is not None:
            opts.on_copied(st.st_size)
        if st.st_nlink > 1:
            opts.hardlinks[key] = host
        staging.record(image_path)
        return
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), host)
        os.chown(host, uid, gid, follow_symlinks=False)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        os.mknod(host, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
        os.chown(host, uid, gid)
        os.chmod(host, mode)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(host, 0o600)
        os.chown(host, uid, gid)
        os.chmod(host, mode)
    else:
        return  # sockets cannot be stored in a layer; Docker skips them too
    _copy_xattrs(src, host)
    mtime_ns = staging.time_of(st.st_mtime_ns)
    os.utime(host, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
    staging.record(image_path)


def _copy_file(src: Path, host: Path, uid: int, gid: int, mode: int, mtime_ns: int) -> None:
    """A regular file's bytes, owner, mode, xattrs and mtime, through fds (no link followed);
    the bytes move inside the kernel (copy_file_range), never through Python buffers."""
    _copy_new_file(str(src), str(host), mtime_ns, 0o600, (uid, gid), mode)


def _copy_fd_xattrs(src_fd: int, dst_fd: int) -> None:
    try:
        names = os.listxattr(src_fd)
    except OSError:
        return  # a file system without xattrs
    for name in names:
        if name.startswith(_SKIPPED_XATTRS):
            continue
        try:
            os.setxattr(dst_fd, name, os.getxattr(src_fd, name))
        except OSError:
            pass  # e.g. trusted.* without the capability: the content still lands


_KERNEL_COPY_REFUSED = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)


def copy_fd_data(src_fd: int, dst_fd: int) -> None:
    """All of src's bytes from its current offset to dst: in the kernel where it can."""
    try:
        while os.copy_file_range(src_fd, dst_fd, _COPY_BUFFER * 64):
            pass
        return
    except OSError as exc:
        if exc.errno not in _KERNEL_COPY_REFUSED:
            raise
    # The context and the store on two file systems (copy_file_range refuses to cross them since
    # Linux 5.19): sendfile still moves the bytes inside the kernel, several times faster than
    # reading them into Python. Both calls move the offsets, so a partial copy carries on below.
    try:
        while os.sendfile(dst_fd, src_fd, None, _COPY_BUFFER * 64):
            pass
        return
    except OSError as exc:
        if exc.errno not in _KERNEL_COPY_REFUSED:
            raise
    while chunk := os.read(src_fd, _COPY_BUFFER):  # a file system that refuses both
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view):]


def _copy_dir_meta(opts: _Options, src: Path | str, st: os.stat_result, image_path: str) -> None:
    """Create (or update) a directory copied from the source with the source's metadata."""
    staging = opts.staging
    host = staging.ensure_dir(image_path)
    uid, gid = _owner(opts, st)
    mode = stat.S_IMODE(st.st_mode)
    if opts.chmod is not None:
        mode = opts.chmod(mode, True)
    staging.set_dir_meta(image_path, mode, uid, gid, st.st_mtime_ns)
    _copy_xattrs(src, host)


def _excluded(opts: _Options, relpath: str, is_dir: bool) -> bool:
    if not opts.exclude:
        return False
    return opts.exclude.ignored(relpath, is_dir=is_dir)


_ACL_DEFAULT = "system.posix_acl_default"


@dataclass(frozen=True)
class _CreateRules:
    """How a new regular file in one staging dir gets its owner and mode in the fewest syscalls.

    A new file belongs to the creator (the dir's group instead when the dir is setgid), so the
    fchown is left out when that is already the owner wanted; it gets the mode asked for less the
    umask (a default ACL on the dir replaces the umask), so a mode the umask keeps whole and
    without setuid/setgid/sticky (which chown would clear) is given at creation, not by fchmod."""

    creator: tuple[int, int] | None  # owner a new file gets without fchown; None: always fchown
    umask: int | None  # None: the mode is always set by fchmod

    @classmethod
    def for_dir(cls, host_dir: str, umask: int | None) -> "_CreateRules":
        st = os.lstat(host_dir)
        creator = None if st.st_mode & stat.S_ISGID else (os.geteuid(), os.getegid())
        if umask is not None:
            try:
                if _ACL_DEFAULT in os.listxattr(host_dir, follow_symlinks=False):
                    umask = None
            except OSError:
                pass  # no xattrs here, so no ACL either
        return cls(creator, umask)

    def job(self, opts: _Options, src: str, host: str, st: os.stat_result) -> "_FileJob":
        owner = opts.chown if opts.chown is not None else opts.context.owner_of(st)
        mode = stat.S_IMODE(st.st_mode)
        if opts.chmod is not None:
            mode = opts.chmod(mode, False)
        if self.umask is not None and not mode & (0o7000 | self.umask):
            create_mode, final_mode = mode, None
        else:
            create_mode, final_mode = 0o600, mode
        return (src, host, opts.staging.time_of(st.st_mtime_ns), create_mode,
                None if owner == self.creator else owner, final_mode)


class _ParallelCopies:
    """Regular files copied by a few threads while the walk goes on: creating a file is kernel
    work that two cores do at twice the pace of one. Work goes out as batches of one directory's
    files, so the threads mostly create files in different directories at once (file creation in
    one directory is serialised by the kernel's lock on it) and the per-file cost in Python stays
    a tuple. The walk makes each dir before it hands over its files; a bounded number of batches
    in flight keeps memory flat; the first error is raised."""

    WORKERS = 4
    IN_FLIGHT = 16  # batches queued or running
    BATCH_FILES = 128
    BATCH_BYTES = 8 << 20  # a big file goes alone, so several threads share a dir of big files

    def __init__(self, on_copied: Callable[[int], None] | None = None) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=self.WORKERS, thread_name_prefix="copy")
        self._pending: deque = deque()
        self._on_copied = on_copied

    def submit(self, batch: "list[_FileJob]", nbytes: int) -> None:
        self._pending.append(self._pool.submit(_copy_batch, batch, nbytes, self._on_copied))
        if len(self._pending) >= self.IN_FLIGHT:
            self._pending.popleft().result()

    def finish(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)


# One regular file for a copy thread: (source host path, staging host path, source mtime_ns,
# mode to create with, owner to set or None, mode to set after the data or None).
_FileJob = tuple[str, str, int, int, "tuple[int, int] | None", "int | None"]


def _copy_batch(batch: "list[_FileJob]", nbytes: int, on_copied: Callable[[int], None] | None) -> None:
    for src, host, mtime_ns, create_mode, owner, final_mode in batch:
        _copy_new_file(src, host, mtime_ns, create_mode, owner, final_mode)
    if on_copied is not None:
        on_copied(nbytes)


def _copy_new_file(src: str, host: str, mtime_ns: int, create_mode: int, owner: tuple[int, int] | None,
                   final_mode: int | None) -> None:
    """`_copy_file` with the syscalls a new file does not need left out: the owner when it is
    already the creator's, the mode when the file could be created with it."""
    src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst_fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, create_mode)
        try:
            copy_fd_data(src_fd, dst_fd)
            if owner is not None:
                os.fchown(dst_fd, *owner)
            if final_mode is not None:
                os.fchmod(dst_fd, final_mode)  # after chown, which clears setuid/setgid
            _copy_fd_xattrs(src_fd, dst_fd)
            os.utime(dst_fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


class _FileBatches:
    """Collects one directory's regular files into batches for `_ParallelCopies`."""

    def __init__(self, copies: _ParallelCopies) -> None:
        self.copies = copies
        self.jobs: list[_FileJob] = []
        self.nbytes = 0

    def add(self, job: _FileJob, size: int) -> None:
        self.jobs.append(job)
        self.nbytes += size
        if len(self.jobs) >= _ParallelCopies.BATCH_FILES or self.nbytes >= _ParallelCopies.BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.jobs:
            self.copies.submit(self.jobs, self.nbytes)
            self.jobs, self.nbytes = [], 0


def _copy_dir_contents(opts: _Options, selected: Selected, dest_dir: str) -> None:
    """A directory source: its contents (not itself) go into `dest_dir`."""
    copies = _ParallelCopies(opts.on_copied)
    try:
        opts.staging.ensure_dir(dest_dir)
        _walk_and_copy(opts, selected, str(selected.path), selected.relpath, "", opts.staging.clean(dest_dir),
                       copies, made=True)
    finally:
        copies.finish()  # every file of this source is in place before anything else runs


def _walk_and_copy(opts: _Options, selected: Selected, host_dir: str, ctx_rel: str, sel_rel: str,
                   dest_root: str, copies: _ParallelCopies, *, made: bool) -> None:
    """Copy the visible children of `host_dir` (at `sel_rel` below the selected dir) into
    `dest_root/sel_rel`, in sorted order, dirs before what they hold. `made`: whether that
    destination dir exists yet (an excluded dir that may hold an exception is made only when a
    kept path needs it)."""
    staging = opts.staging
    dest_dir = posixpath.join(dest_root, sel_rel) if sel_rel else dest_root
    dest_prefix = dest_dir if dest_dir.endswith("/") else dest_dir + "/"
    src_prefix = host_dir if host_dir.endswith("/") else host_dir + "/"
    ctx_prefix = "" if ctx_rel in ("", ".") else ctx_rel + "/"
    sel_prefix = sel_rel + "/" if sel_rel else ""
    exclude = opts.exclude
    files = _FileBatches(copies)
    create: _CreateRules | None = None
    for name, st in opts.context.list_dir(host_dir, ctx_rel):
        relpath = sel_prefix + name
        mode = st.st_mode
        is_dir = stat.S_ISDIR(mode)
        if exclude and exclude.ignored(relpath, is_dir=is_dir):
            if is_dir and exclude.may_contain_exceptions(relpath):
                files.flush()
                _walk_and_copy(opts, selected, src_prefix + name, ctx_prefix + name, relpath, dest_root, copies,
                               made=False)
            continue
        if not made:
            _make_parents_like_source(opts, selected, sel_rel, dest_root)
            made = True
        target = dest_prefix + name
        if is_dir:
            _copy_dir_meta(opts, src_prefix + name, st, target)
            files.flush()  # this dir's files so far go out before the walk goes down
            _walk_and_copy(opts, selected, src_prefix + name, ctx_prefix + name, relpath, dest_root, copies,
                           made=True)
        elif stat.S_ISREG(mode) and st.st_nlink == 1:
            if create is None:
                create = _CreateRules.for_dir(staging.root_text + dest_dir, opts.umask)
            if target in staging.written:  # an earlier source of this instruction wrote it
                staging.prepare_target(target, replace_dir=True)
            files.add(create.job(opts, src_prefix + name, staging.root_text + target, st), st.st_size)
            staging.written.add(target)
        else:  # links, devices, and files with hardlinks (their first copy must come first)
            _copy_entry(opts, Path(src_prefix + name), st, target)
    files.flush()


def _make_parents_like_source(opts: _Options, selected: Selected, parent_rel: str, dest_dir: str) -> None:
    """Dirs skipped by an exclude but needed by a re-included file get the source's metadata."""
    parts = parent_rel.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        src = selected.path / sub
        target = posixpath.join(dest_dir, sub)
        if opts.staging.is_dir(target):
            continue
        _copy_dir_meta(opts, src, os.lstat(src), target)


def _make_parents_path(opts: _Options, selected: Selected, dest_dir: str) -> str:
    """--parents: recreate the source's parent dirs (after a `/./` pivot) under `dest_dir`."""
    parents = posixpath.dirname(selected.parents_path)
    if not parents:
        return dest_dir
    logical = [p for p in selected.logical.split("/") if p not in ("", ".")]
    resolved = [p for p in selected.relpath.split("/") if p not in ("", ".")]
    same_shape = len(logical) == len(resolved)
    pieces = parents.split("/")
    offset = len(logical) - 1 - len(pieces)
    for i in range(1, len(pieces) + 1):
        target = posixpath.join(dest_dir, *pieces[:i])
        host_target = opts.staging.host_path(target)
        if host_target.is_dir():
            continue
        if same_shape:
            src = opts.context.root.joinpath(*resolved[: offset + i])
            st = os.lstat(src)
            if stat.S_ISDIR(st.st_mode):
                _copy_dir_meta(opts, src, st, target)
                continue
        opts.staging.ensure_dir(target)
    return posixpath.join(dest_dir, parents)


def _heredoc_name(word: str) -> str:
    name = word[2:]
    if name.startswith("-"):
        name = name[1:]
    return name.strip("'\"")


def _heredoc_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)):
        return "".join(str(v) for v in value)
    content = getattr(value, "content", None)
    if isinstance(content, str):
        return content
    raise TypeError(f"unsupported heredoc value {value!r}")


def _write_heredoc(opts: _Options, image_path: str, text: str, mtime_ns: int) -> None:
    staging = opts.staging
    staging.ensure_dir(posixpath.dirname(staging.clean(image_path)))
    host = staging.prepare_target(image_path, replace_dir=True)
    uid, gid = opts.chown if opts.chown is not None else (0, 0)
    mode = opts.chmod(0o644, False) if opts.chmod else 0o644
    fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(text.encode("utf-8", "surrogateescape"))
        os.fchown(out.fileno(), uid, gid)
        os.fchmod(out.fileno(), mode)
    mtime_ns = staging.time_of(mtime_ns)
    os.utime(host, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
    staging.record(image_path)


@dataclass(frozen=True)
class _Source:
    """One thing a COPY/ADD copies: a selected path, a URL (`name`), or a heredoc (`name`, `text`)."""

    kind: str  # path | url | heredoc
    item: Selected | None = None
    name: str = ""
    text: str = ""


@dataclass
class Download:
    path: Path
    name: str
    mtime_ns: int | None


def download_url(url: str, into: Path, *, checksum: str | None, pos: Pos | None, timeout: float = 60.0) -> Download:
    """Stream `url` to a file under `into`; verify `sha256:<hex>` when given."""
    # Imported here: the HTTP client costs a build that fetches nothing 20 ms of start-up.
    import urllib.error
    import urllib.parse
    import urllib.request
    from email.utils import parsedate_to_datetime

    expected = None
    if checksum:
        algo, _, hexdigest = checksum.partition(":")
        if algo != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", hexdigest):
            raise ContextError(
                f'unsupported --checksum "{checksum}"', pos=pos, hint="use --checksum=sha256:<64 hex digits>"
            )
        expected = hexdigest.lower()
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    target = into / "download"
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "builder"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(target, "wb") as out:
            while chunk := response.read(_COPY_BUFFER):
                digest.update(chunk)
                out.write(chunk)
            last_modified = response.headers.get("Last-Modified")
    except urllib.error.HTTPError as exc:
        raise ContextError(f"failed to download {url}: HTTP {exc.code} {exc.reason}", pos=pos) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ContextError(f"failed to download {url}: {reason}", pos=pos) from None
    if expected is not None and digest.hexdigest() != expected:
        raise ContextError(
            f"checksum mismatch for {url}: expected sha256:{expected}, got sha256:{digest.hexdigest()}",
            pos=pos,
            hint="the remote file changed or the --checksum is wrong",
        )
    mtime_ns = None
    if last_modified:
        try:
            mtime_ns = int(parsedate_to_datetime(last_modified).timestamp()) * 1_000_000_000
        except (TypeError, ValueError):
            mtime_ns = None
    return Download(target, name, mtime_ns)


def stage_copy(
    context: BuildContext,
    sources: Sequence[str],
    dest: str,
    *,
    workdir: str,
    staging_dir: Path,
    dest_is_dir: Callable[[str], bool],
    chown: tuple[int, int] | None,
    chmod: str | None,
    exclude: Sequence[str] = (),
    parents: bool = False,
    pos: Pos | None = None,
    source_date_epoch: int | None = None,
    is_add: bool = False,
    heredocs: Mapping[str, object] | None = None,
    checksum: str | None = None,
    image_dir_meta: Callable[[str], DirMeta | None] | None = None,
    resolve_image_path: Callable[[str], str] | None = None,
    download_dir: Path | None = None,
    downloads: Mapping[str, "Download"] | None = None,
    image_node: Callable[[str], tuple[str, str | None] | None] | None = None,
    on_copied: Callable[[int], None] | None = None,
    layer_times: bool = False,
) -> CopyResult:
    """Write what one COPY/ADD adds into the empty `staging_dir`; see the module docstring.

    `sources` are expanded words; a heredoc source is its `<<NAME` word with the body in
    `heredocs[NAME]` (a str, a tuple of str pieces, or an ast.Heredoc). Returns the image paths
    written.

    `image_dir_meta(path)` gives the metadata of a directory that exists in the parent image (so
    the layer repeats it unchanged); `resolve_image_path(path)` resolves symlinks of the parent
    image in a destination path, chroot-like, keeping missing components as written (so
    `COPY x /bin/` lands in /usr/bin when /bin -> usr/bin). `view_dir_meta(view)` and
    `view_resolver(view)` build both from a builder.snapshot.view.LayeredView. `image_node(path)`
    says what the image holds at a symlink-free path ("dir", "link" with its target, "other"), so
    an ADD archive's entries follow the image's links below the destination (`view_node(view)`).

    `downloads` holds URL sources already fetched (the bytes the step's cache key was made
    from); they are moved into place. Other URLs are fetched into `download_dir`.

    `layer_times`: write every mtime as the layer will record it (whole seconds, clamped to
    `source_date_epoch`), for a staging dir that becomes a layer: the store then finds the times
    already right instead of setting each file's again."""
    heredocs = heredocs or {}
    if not sources:
        raise ContextError("COPY/ADD needs at least one source and a destination", pos=pos)
    invented_ns = (source_date_epoch or 0) * 1_000_000_000
    staging = StagingTree(
        staging_dir,
        created_owner=chown if chown is not None else (0, 0),
        created_mtime_ns=invented_ns,
        image_dir_meta=image_dir_meta,
        image_node=image_node,
        time_of=layer_time_of(source_date_epoch) if layer_times else None,
    )
    opts = _Options(
        context=context,
        staging=staging,
        chown=chown,
        chmod=parse_chmod(chmod, pos),
        exclude=IgnoreMatcher.from_lines(exclude, source="--exclude"),
        pos=pos,
        on_copied=on_copied,
    )

    base = workdir if workdir else "/"
    dest_abs = dest if dest.startswith("/") else posixpath.join(base if base.startswith("/") else "/" + base, dest)
    dest_clean = go_clean(dest_abs)
    trailing = dest.endswith("/") or dest in (".", "..") or dest.endswith("/.") or dest.endswith("/..")
    dest_dir_before = trailing or dest_clean == "/" or dest_is_dir(dest_clean)
    if checksum and not is_add:
        raise ContextError("--checksum is only supported by ADD", pos=pos)

    # Select everything first, so a missing source fails before anything is written. BuildKit
    # copies the file sources in order, then the heredocs.
    plan: list[_Source] = []
    documents: list[_Source] = []
    for source in sources:
        if source.startswith("<<"):
            name = _heredoc_name(source)
            if name not in heredocs:
                raise ContextError(f'no heredoc body for source "{source}"', pos=pos)
            documents.append(_Source("heredoc", name=name, text=_heredoc_text(heredocs[name])))
        elif is_add and is_git_source(source):
            raise git_source_error(source, pos)
        elif is_add and _URL_RE.match(source):
            plan.append(_Source("url", name=source))
        else:
            if checksum and is_add:
                raise ContextError(
                    "--checksum can only be used with a remote URL source", pos=pos
                )
            # --parents copies links as links, as BuildKit's include-pattern walk from the root does.
            for item in context.select([source], pos=pos, follow_links=not parents):
                plan.append(_Source("path", item=item))
    plan.extend(documents)
    path_items = [step.item for step in plan if step.item is not None]
    if resolve_image_path is not None and dest_clean != "/":
        fills_dest = dest_dir_before or any(
            item.kind == "dir" or (is_add and item.kind == "file" and is_tar_archive(item.path))
            for item in path_items
        )
        if fills_dest:
            dest_clean = go_clean(resolve_image_path(dest_clean))
        else:  # a file replaces whatever the last component is, link included; its parents resolve
            parent = go_clean(resolve_image_path(posixpath.dirname(dest_clean)))
            dest_clean = posixpath.join(parent, posixpath.basename(dest_clean))

    def dest_is_dir_now() -> bool:
        # What an earlier source of this instruction left at the destination wins over the image.
        if staging.is_dir(dest_clean):
            return True
        return dest_dir_before and staging.clean(dest_clean) not in staging.written

    with _copy_errors("ADD" if is_add else "COPY", dest, pos):
        # Nothing to copy (wildcards that matched nothing) writes nothing, not even the
        # destination's dir: BuildKit returns before fsutil's Copy makes it.
        for step in plan:
            dir_mode = dest_is_dir_now()
            if step.item is not None:
                _stage_selected(opts, step.item, dest_clean, dir_mode, parents, is_add)
            elif step.kind == "heredoc":
                target = posixpath.join(dest_clean, step.name) if dir_mode else dest_clean
                _write_heredoc(opts, target, step.text, invented_ns)
            else:
                fetched = (downloads or {}).get(step.name)
                _stage_url(opts, step.name, dest_clean, dir_mode, checksum, invented_ns, download_dir, fetched)
    staging.finish()
    return CopyResult(sorted(staging.written))


def stage_entry(item: Selected, dest: str, *, staging_dir: Path, pos: Pos | None = None) -> None:
    """Copy one already resolved entry (a RUN bind mount's source) to `dest` in the empty
    `staging_dir`, with the owners, modes and times COPY would give it; a dir's contents go below."""
    assert item.context is not None, "Selected made outside BuildContext"
    staging = StagingTree(staging_dir, created_owner=(0, 0), created_mtime_ns=0, image_dir_meta=None)
    opts = _Options(context=item.context, staging=staging, chown=None, chmod=None,
                    exclude=IgnoreMatcher.empty(), pos=pos)
    with _copy_errors("RUN --mount", dest, pos):
        _stage_selected(opts, item, dest, dir_mode=False, parents=False, is_add=False)
    staging.finish()


@contextmanager
def _copy_errors(what: str, dest: str, pos: Pos | None) -> Iterator[None]:
    try:
        yield
    except ValueError as exc:
        raise ContextError(f"cannot copy to {dest}: {exc}", pos=pos) from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # the store's disk is full, not the sources' fault: the build reports it as such
        # A source that vanished or turned unreadable mid-copy: a message, not a trace.
        where = f": {exc.filename}" if exc.filename else ""
        raise ContextError(
            f"{what} failed: {exc.strerror or exc}{where}",
            pos=pos,
            hint="make sure the sources are readable and do not change during the build",
        ) from None


def _stage_selected(opts: _Options, item: Selected, dest: str, dir_mode: bool, parents: bool, is_add: bool) -> None:
    st = os.lstat(item.path)
    is_dir = stat.S_ISDIR(st.st_mode)
    top_name = item.name
    if not is_dir and opts.exclude and (
        _excluded(opts, top_name, False) or _excluded(opts, item.logical, False)
    ):
        return
    if parents:
        dest = _make_parents_path(opts, item, dest)
        if is_dir:
            target_dir = posixpath.join(dest, top_name) if top_name else dest
            _copy_dir_meta(opts, item.path, st, target_dir)
            _copy_dir_contents(opts, item, target_dir)
            return
        dir_mode = True
    if is_dir:
        _copy_dir_contents(opts, item, dest)
        return
    if is_add and stat.S_ISREG(st.st_mode) and is_tar_archive(item.path):
        try:
            extract_tar(item.path, opts.staging, dest, chown=opts.chown, pos=opts.pos, display_name=item.source)
        except ValueError as exc:
            raise ArchiveError(f'archive "{item.source}": {exc}', pos=opts.pos) from None
        return
    target = posixpath.join(dest, top_name) if dir_mode else dest
    _copy_entry(opts, item.path, st, target)


def _stage_url(
    opts: _Options,
    url: str,
    dest: str,
    dir_mode: bool,
    checksum: str | None,
    invented_ns: int,
    download_dir: Path | None,
    fetched: "Download | None" = None,
) -> None:
    with tempfile.TemporaryDirectory(prefix="builder-add-", dir=download_dir) as tmp:
        got = fetched if fetched is not None else download_url(url, Path(tmp), checksum=checksum, pos=opts.pos)
        if dir_mode:
            if not got.name:
                raise ContextError(
                    f"cannot determine a file name from the URL {url}",
                    pos=opts.pos,
                    hint="give the destination as a file path (no trailing /)",
                )
            target = posixpath.join(dest, got.name)
        else:
            target = dest
        staging = opts.staging
        staging.ensure_dir(posixpath.dirname(staging.clean(target)))
        host = staging.prepare_target(target, replace_dir=True)
        shutil.move(str(got.path), host)
        uid, gid = opts.chown if opts.chown is not None else (0, 0)
        mode = opts.chmod(0o600, False) if opts.chmod else 0o600
        os.chown(host, uid, gid)
        os.chmod(host, mode)
        mtime = staging.time_of(got.mtime_ns if got.mtime_ns is not None else invented_ns)
        os.utime(host, ns=(mtime, mtime))
        staging.record(target)


# adapters for the parent image ------------------------------------------------------------------


def view_resolver(view) -> Callable[[str], str]:
    """`resolve_image_path` from a LayeredView-like object (`resolve(path, follow=True)`)."""

    def resolve(path: str) -> str:
        parts = [p for p in path.split("/") if p]
        for cut in range(len(parts), -1, -1):
            resolved = view.resolve("/" + "/".join(parts[:cut]), follow=True)
            if resolved is not None:
                rest = parts[cut:]
                return go_clean("/".join([resolved.rstrip("/"), *rest]) or "/")
        return path

    return resolve


def view_node(view) -> Callable[[str], tuple[str, str | None] | None]:
    """`image_node` from a LayeredView-like object (`lookup(path)`, `host_path(path)`)."""

    def node(path: str) -> tuple[str, str | None] | None:
        st = view.lookup(path)
        if st is None:
            return None
        if stat.S_ISLNK(st.st_mode):
            return "link", os.readlink(view.host_path(path))
        return ("dir" if stat.S_ISDIR(st.st_mode) else "other"), None

    return node


def view_dir_meta(view) -> Callable[[str], DirMeta | None]:
    """`image_dir_meta` from a LayeredView-like object (`lookup(path) -> stat or None`)."""

    def meta(path: str) -> DirMeta | None:
        st = view.lookup(path)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return None
        return DirMeta(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)

    return meta
