"""RUN --mount: bind, cache, tmpfs and secret mounts, prepared for the sandbox.

Bind and cache mounts are host dirs bound into the sandbox. A tmpfs mount is a real tmpfs
mounted inside the sandbox; a secret's content is read here and handed to the sandbox, which
keeps it on a tmpfs of its own mount namespace: neither is ever written to the store's disk.

What a mount contributes to the step's cache key: a bind mount its source's content digest (or
the source stage's chain id); a cache or tmpfs mount only its options, as BuildKit does; a
secret mount only its id, never its content, which also never reaches a layer or the history.

Which directory a cache mount gets is BuildKit's rule: its `id` (default: the target as written,
cleaned as Go's path.Clean does, so a relative target names the same cache in every WORKDIR),
plus its `uid`/`gid`/`mode` when any of them is given (BuildKit seeds such a cache from a
directory it makes with them, and that seed is part of the cache's identity). `sharing`,
`readonly` and the target itself (once an id is given) do not change which cache is used.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import posixpath
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from builder.errors import BuildError, ContextError, PlanError, Pos
from builder.parse import ast

if TYPE_CHECKING:
    from builder.sandbox.runner import ExtraMount
    from builder.solve.sources import Source

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret")
# BuildKit's limit on a secret: it is held in memory, never on disk.
MAX_SECRET_SIZE = 500 * 1024


@dataclass
class PreparedMount:
    """One RUN --mount, resolved for a step: what to mount where, and its part of the cache key."""

    kind: str
    target: str
    options: dict[str, str]
    source: Any = None  # bind: a steps.Source to read from
    source_path: str = "."
    key: Any = None  # what this mount adds to the cache key
    pos: Pos | None = None  # the RUN's position, for errors found when the mount is made


def _error(instruction: ast.Instruction, message: str, hint: str) -> PlanError:
    return PlanError(message, pos=instruction.pos, source_line=instruction.source.splitlines()[0], hint=hint)


_BOOLEANS = {  # Go's strconv.ParseBool, which BuildKit uses for these options
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), "true"),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), "false"),
}
_BOOLEAN_OPTIONS = ("readonly", "ro", "readwrite", "rw", "required")
_SHARING_MODES = ("shared", "private", "locked")
_TARGET_OPTIONS = {"target", "dst", "destination"}
_ACCESS_OPTIONS = {"readonly", "ro", "readwrite", "rw"}
# What each mount type accepts here; BuildKit's parseMount refuses the same misplaced keys
# (`required` off a secret, `size` off a tmpfs, `sharing` off a cache, `mode`/`uid`/`gid` on
# bind and tmpfs, `from` on a secret) and any key it does not know.
_OPTIONS_OF = {
    "bind": _TARGET_OPTIONS | _ACCESS_OPTIONS | {"source", "src", "from", "id"},
    "cache": _TARGET_OPTIONS | _ACCESS_OPTIONS | {"id", "sharing", "mode", "uid", "gid"},
    "tmpfs": _TARGET_OPTIONS | _ACCESS_OPTIONS | {"size", "id"},
    "secret": _TARGET_OPTIONS | _ACCESS_OPTIONS | {"id", "required", "mode", "uid", "gid"},
}
# Keys BuildKit knows that this builder does not implement for some types (a cache seeded
# `from` a stage, a secret exposed as `env`): refused rather than silently ignored.
_BUILDKIT_OPTIONS = frozenset().union(*_OPTIONS_OF.values(), {"env", "from", "source", "src", "size", "sharing", "required"})
_MAX_ID = 2**32 - 2  # a uid/gid; 2**32 - 1 is (uid_t)-1, "leave unchanged" to chown
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def tmpfs_size(value: str) -> int | None:
    """Bytes of a tmpfs `size=` as docker's units.RAMInBytes reads it (`64m`, `1.5GiB`, `1048576`)."""
    # Each part starts with a different character class: no backtracking on any input.
    match = re.fullmatch(r"([0-9]{1,20}(?:\.[0-9]{1,20})?) ?([kmgtp])?i?b?", value, re.IGNORECASE)
    if match is None:
        return None
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])


def validate_mount_options(instruction: ast.Instruction, kind: str, options: dict[str, str]) -> None:
    """Check every option of one (expanded) mount before anything uses it; booleans become
    "true"/"false" and `sharing` lower case, the spellings MountSetup reads.

    A bad value is a PlanError at the RUN, not a ValueError when the mount is set up.
    """
    accepted = _OPTIONS_OF[kind]
    for key in list(options):
        value = options[key]
        shown = repr(value if len(value) <= 40 else value[:40] + "...")
        if key not in accepted:
            if key in _BUILDKIT_OPTIONS:
                message = f"{key}= is not supported on a {kind} mount"
            else:
                message = f"unknown option {key!r} in --mount=type={kind}"
            raise _error(instruction, message, f"a {kind} mount takes: {', '.join(sorted(accepted))}")
        if "\0" in value:
            raise _error(instruction, f"the {key}= value of a {kind} mount holds a NUL character", "remove it")
        if key in _BOOLEAN_OPTIONS:
            if value not in _BOOLEANS:
                raise _error(instruction, f"invalid value for {key}: {shown}", f"use {key}=true or {key}=false")
            options[key] = _BOOLEANS[value]
        elif key == "mode":
            if not (0 < len(value) <= 12 and all(char in "01234567" for char in value)) or int(value, 8) > 0o7777:
                raise _error(instruction, f"invalid value for mode: {shown}", "give octal permissions, e.g. mode=0755")
        elif key in ("uid", "gid"):
            if not (0 < len(value) <= 10 and value.isascii() and value.isdigit()) or int(value) > _MAX_ID:
                raise _error(instruction, f"invalid value for {key}: {shown}", f"give a numeric {key}, e.g. {key}=1000")
        elif key == "sharing":
            if value.lower() not in _SHARING_MODES:
                raise _error(instruction, f"unsupported sharing value {shown}", "use sharing=shared, private or locked")
            options[key] = value.lower()
        elif key == "size":
            if tmpfs_size(value) is None:
                raise _error(instruction, f"invalid value for size: {shown}", "give a size such as size=64m or size=1g")


def mount_readonly(kind: str, options: dict[str, str]) -> bool:
    """Whether a bind or cache mount is read-only: a bind is by default, a cache is not;
    `ro`/`readonly` and `rw`/`readwrite` (validated booleans) say otherwise, the last one wins."""
    readonly = kind == "bind"
    for key, value in options.items():
        if key in ("ro", "readonly"):
            readonly = value == "true"
        elif key in ("rw", "readwrite"):
            readonly = value != "true"
    return readonly


def _absolute_target(target: str, workdir: str) -> str:
    return posixpath.normpath(posixpath.join(workdir, target))


def go_path_clean(path: str) -> str:
    """Go's path.Clean: like posixpath.normpath, except that a leading "//" is one slash."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


@dataclass(frozen=True)
class CacheIdentity:
    """Which persistent directory a cache mount uses."""

    cache_id: str
    # (uid, gid, mode) when any was given, the others at BuildKit's defaults (0, 0, 0755).
    seed: tuple[int, int, int] | None

    @classmethod
    def of(cls, options: dict[str, str]) -> CacheIdentity:
        target = options.get("target") or options.get("dst") or options.get("destination") or ""
        cache_id = options.get("id") or go_path_clean(target)
        if not any(key in options for key in ("uid", "gid", "mode")):
            return cls(cache_id, None)
        return cls(cache_id, (int(options.get("uid", "0")), int(options.get("gid", "0")),
                              int(options.get("mode", "0755"), 8)))

    def dir_name(self) -> str:
        # Without a seed the name is the id's alone, as before seeds counted: caches made by
        # earlier versions keep being used.
        text = self.cache_id if self.seed is None else f"{self.cache_id}\0{self.seed[0]}:{self.seed[1]}:{self.seed[2]:o}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def owner_and_mode(self) -> tuple[int, int, int]:
        """What a new cache dir gets: BuildKit's mkdir keeps only the permission bits of `mode`
        (no setuid, setgid or sticky) and, with buildkitd's umask 0, all of them."""
        uid, gid, mode = self.seed if self.seed is not None else (0, 0, 0o755)
        return uid, gid, mode & 0o777


def plan_mounts(
    instruction: ast.Run,
    *,
    expand: Callable[[str], str],
    workdir: str,
    source_for: Callable[[str | None, Sequence[str]], Source],
    stat_cache,
    secrets: dict[str, Path],
) -> list[PreparedMount]:
    """Check each --mount and compute its cache-key part; no file system changes yet."""
    prepared: list[PreparedMount] = []
    for mount in instruction.mounts:
        try:
            options = {name: expand(value) for name, value in mount.options}
        except BuildError as error:
            if error.pos is None:  # the expander may not know where the word came from
                error.pos = instruction.pos
                error.source_line = instruction.source.splitlines()[0]
            raise
        kind = mount.type
        if kind not in MOUNT_TYPES:
            raise _error(instruction, f"RUN --mount=type={kind} is not supported", "use type=bind, cache, tmpfs or secret")
        validate_mount_options(instruction, kind, options)
        if kind == "secret":
            secret_id = options.get("id") or posixpath.basename(options.get("target", options.get("dst", "")))
            if not secret_id:
                raise _error(instruction, "a secret mount needs id=", "e.g. --mount=type=secret,id=token")
            secret_target = options.get("target") or options.get("dst") or options.get("destination") or f"/run/secrets/{secret_id}"
            if secret_id not in secrets and options.get("required", "false") in ("true", "1", ""):
                raise _error(instruction, f"secret {secret_id!r} is required but was not given", f"pass --secret id={secret_id},src=FILE")
            prepared.append(PreparedMount(kind, _absolute_target(secret_target, workdir), {**options, "id": secret_id}, key=["secret", secret_id, secret_target]))
            continue
        target = options.get("target") or options.get("dst") or options.get("destination")
        if not target:
            raise _error(instruction, f"a {kind} mount needs target=", "e.g. --mount=type=" + kind + ",target=/path")
        target = _absolute_target(target, workdir)
        if kind == "bind":
            source = options.get("source") or options.get("src") or "."
            origin = source_for(options.get("from"), [source])
            identity = origin.identity
            if identity is None:
                context = origin.context()
                # Links on the way and at the end resolve inside the context, as at mount time.
                identity = context.content_digest([context.resolve(source, pos=instruction.pos)], stat_cache)
            prepared.append(PreparedMount(kind, target, options, origin, source, key=["bind", target, source, identity, "ro" if mount_readonly(kind, options) else "rw"], pos=instruction.pos))
        elif kind == "cache":
            key_options = {name: value for name, value in sorted(options.items())}
            prepared.append(PreparedMount(kind, target, options, key=["cache", key_options]))
        else:
            prepared.append(PreparedMount(kind, target, options, key=["tmpfs", target]))
    return prepared


class MountSetup:
    """The sandbox mounts of one RUN; `close()` releases cache locks."""

    def __init__(self, store_root: Path, work: Path) -> None:
        # The sandbox refuses a bind source with a symlink anywhere on its path; these two
        # builder-made prefixes are resolved once here, so only what is staged below them counts.
        self.store_root = Path(os.path.realpath(store_root))
        self.work = Path(os.path.realpath(work))
        self.locks: list[int] = []

    def binds(self, prepared: list[PreparedMount], secrets: dict[str, Path]) -> list[ExtraMount]:
        """The sandbox mounts, in the order of the --mount flags: `Bind`s of host dirs for bind
        and cache mounts, `Tmpfs` and `SecretFile` (content in memory only) for the others."""
        from builder.sandbox import Bind, SecretFile, Tmpfs
        from builder.solve.copy import stage_entry

        binds: list[ExtraMount] = []
        for index, mount in enumerate(prepared):
            if mount.kind == "bind":
                staging = self.work / f"m{index}"
                staging.mkdir()
                # The source is resolved inside its own root (context, stage or image), the last
                # link too, and copied: what gets bound is a private file or dir, never a link.
                item = mount.source.context().resolve(mount.source_path, pos=mount.pos)
                if item.kind not in ("dir", "file"):
                    raise ContextError(
                        f'bind mount source "{mount.source_path}" is neither a regular file nor a directory',
                        pos=mount.pos,
                        hint="mount a regular file or a directory",
                    )
                stage_entry(item, "/m", staging_dir=staging, pos=mount.pos)
                binds.append(Bind(staging / "m", mount.target, readonly=mount_readonly("bind", mount.options)))
            elif mount.kind == "cache":
                binds.append(Bind(self._cache_dir(mount), mount.target, readonly=mount_readonly("cache", mount.options)))
            elif mount.kind == "tmpfs":
                size = mount.options.get("size")
                # Checked when planned; 0 means no limit, as for docker's tmpfs mounts.
                binds.append(Tmpfs(mount.target, size=tmpfs_size(size) or None if size else None))
            else:
                source = secrets.get(mount.options["id"])
                if source is None:
                    continue  # optional secret not given: Docker skips the mount
                binds.append(SecretFile(
                    mount.target, _read_secret(mount.options["id"], source),
                    mode=int(mount.options.get("mode", "0400"), 8),
                    uid=int(mount.options.get("uid", "0")), gid=int(mount.options.get("gid", "0")),
                ))
        return binds

    def _cache_dir(self, mount: PreparedMount) -> Path:
        identity = CacheIdentity.of(mount.options)
        directory = self.store_root / "cache-mounts" / identity.dir_name()
        if not directory.exists():
            directory.parent.mkdir(parents=True, exist_ok=True)
            partial = Path(str(directory) + f".{os.getpid()}.tmp")
            uid, gid, mode = identity.owner_and_mode()
            partial.mkdir(mode=0o700, exist_ok=True)
            os.chown(partial, uid, gid)
            os.chmod(partial, mode)  # not through mkdir: the builder's umask must not count
            try:
                partial.rename(directory)
            except OSError:
                shutil.rmtree(partial, ignore_errors=True)  # another build created it first
        if mount.options.get("sharing", "shared") in ("locked", "private"):
            # `private` would want a fresh dir per concurrent user; a lock gives the same safety.
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.locks.append(fd)
        return directory

    def close(self) -> None:
        for fd in self.locks:
            os.close(fd)
        self.locks.clear()


def _read_secret(secret_id: str, source: Path) -> bytes:
    try:
        with open(source, "rb") as handle:
            data = handle.read(MAX_SECRET_SIZE + 1)
    except OSError as exc:
        raise BuildError(f"cannot read secret {secret_id!r} from {source}: {exc.strerror}",
                         hint="check the src= path of --secret") from exc
    if len(data) > MAX_SECRET_SIZE:
        raise BuildError(f"secret {secret_id!r} is larger than {MAX_SECRET_SIZE // 1024} KiB",
                         hint="secrets are held in memory only; BuildKit has the same limit")
    return data


def parse_secret_spec(text: str) -> tuple[str, Path]:
    """`id=NAME,src=PATH` (also `source=`), as `docker build --secret` takes it."""
    fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
    secret_id = fields.get("id")
    source = fields.get("src") or fields.get("source")
    if not secret_id or not source:
        raise BuildError(f"invalid --secret {text!r}", hint="write --secret id=NAME,src=PATH")
    path = Path(source)
    if not path.is_file():
        raise BuildError(f"secret file {source!r} not found", hint="check the src= path of --secret")
    return secret_id, path
