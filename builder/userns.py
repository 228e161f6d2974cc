"""Rootless mode: run by an ordinary user, the builder works inside a user namespace in which
that user is root.

`enter()` (the CLI calls it before anything else when it is not root) moves the calling
process, which must have a single thread, into a new user namespace:

- with the user's /etc/subuid and /etc/subgid ranges mapped by newuidmap/newgidmap (the
  setuid helpers of the `uidmap` package): inside, id 0 is the user and ids 1, 2, ... are the
  subordinate ids in file order, so files an image gives to other owners (apt's `_apt`, a
  `USER app` of uid 1000) keep them on disk;
- without subordinate ranges, with only id 0 (the user) mapped: an owner other than 0 cannot
  be represented, and the first file that needs one is an `OwnerError` naming the file and the
  id, never a file silently given another owner.

Everything then happens inside the namespace: unpacking layers, RUN (whose sandbox makes its
other namespaces from there), the tar writer, the store. stat() inside shows an image's own
ids, so a rootless build writes the very layer tars a root build writes. What the namespace
changes for overlayfs is asked of `in_user_namespace()`: overlay is mounted with `userxattr`
and keeps its own state (the opaque mark of a layer dir) in `user.overlay.*` xattrs, as only
the initial namespace's root may write `trusted.*`; whiteouts stay 0/0 character devices,
which the kernel lets anyone make.
"""
from __future__ import annotations

import os
import pwd
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import BuildError, Pos, SandboxError

if TYPE_CHECKING:
    import subprocess

CLONE_NEWUSER = 0x10000000
SUBUID_FILE = Path("/etc/subuid")
SUBGID_FILE = Path("/etc/subgid")
# overlayfs keeps its own state in xattrs of one of these namespaces; neither is ever part of
# an image (a layer tar carries no overlay state, and extraction never sets it from one).
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
SUBID_HINT = ("as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user} "
              "(any free range of 65536 ids), then try again")


class OwnerError(BuildError):
    """A file needs an owner that the builder's user namespace cannot represent."""


@dataclass(frozen=True)
class IdRange:
    """`count` ids from `inside` in the namespace are `outside` ... in the parent namespace."""

    inside: int
    outside: int
    count: int

    def holds(self, value: int) -> bool:
        return self.inside <= value < self.inside + self.count


FULL_MAP = (IdRange(0, 0, 2**32 - 1),)
_maps: dict[str, tuple[IdRange, ...]] = {}


def _parse_map(text: str) -> tuple[IdRange, ...]:
    ranges = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(field.isdigit() for field in fields):
            ranges.append(IdRange(int(fields[0]), int(fields[1]), int(fields[2])))
    return tuple(ranges)


def id_map(kind: str) -> tuple[IdRange, ...]:
    """The uid ("uid") or gid ("gid") map of this process's user namespace."""
    found = _maps.get(kind)
    if found is None:
        try:
            found = _parse_map(Path(f"/proc/self/{kind}_map").read_text())
        except OSError:
            found = FULL_MAP  # no /proc: nothing tells otherwise
        _maps[kind] = found
    return found


def in_user_namespace() -> bool:
    """True when the builder runs in a user namespace other than the initial one (rootless)."""
    return id_map("uid") != FULL_MAP


def overlay_xattr_prefix() -> str:
    """Where overlayfs keeps its state in this namespace (`userxattr` mounts use user.*)."""
    return OVERLAY_XATTR_PREFIXES[1] if in_user_namespace() else OVERLAY_XATTR_PREFIXES[0]


def opaque_xattr() -> str:
    """The xattr that marks an opaque directory in a layer dir of this namespace's store."""
    return overlay_xattr_prefix() + "opaque"


def is_overlay_xattr(name: str) -> bool:
    return name.startswith(OVERLAY_XATTR_PREFIXES)


def is_mapped(kind: str, value: int) -> bool:
    return any(r.holds(value) for r in id_map(kind))


def _describe(kind: str) -> str:
    spans: list[list[int]] = []  # [first, last] inside, adjacent ranges joined
    for r in sorted(id_map(kind), key=lambda r: r.inside):
        if spans and spans[-1][1] + 1 == r.inside:
            spans[-1][1] = r.inside + r.count - 1
        else:
            spans.append([r.inside, r.inside + r.count - 1])
    shown = ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in spans)
    return f"{kind}s {shown}" if shown else f"no {kind}s"


def owner_hint(kind: str, value: int) -> str:
    """What to do when `value` is not a `kind` ("uid"/"gid") of this namespace."""
    if not in_user_namespace():
        return ("an ordinary user can only own files as themselves: run the `builder` command, which enters "
                "a user namespace first, or call builder.userns.enter() before using the library")
    ranges = id_map(kind)
    user = os.environ.get("USER") or "USER"
    if len(ranges) == 1 and ranges[0].count == 1:
        return (f"{user} has no subordinate {kind}s, so only {kind} 0 exists in the build; "
                + SUBID_HINT.format(user=user))
    return (f"the subordinate {kind}s of {user} (in /etc/sub{kind}) are too few for {kind} {value}: "
            f"give {user} a range of at least {value} ids")


def describe_owner(uid: int) -> str:
    """Who owns a file of uid `uid` (as stat shows it here), in words that hold outside too."""
    if not in_user_namespace():
        return f"uid {uid}"
    if uid == 0:
        return f"you ({os.environ.get('USER') or 'the user running the builder'})"
    overflow = _read_sysctl("/proc/sys/kernel/overflowuid") or "65534"
    if str(uid) == overflow or not is_mapped("uid", uid):
        # The kernel shows every owner the namespace does not map as this one id.
        return f"another user (uid {uid} here: an id outside the builder's user namespace)"
    return f"uid {uid} of your builds (one of your subordinate ids)"


def check_owner(path: str, uid: int, gid: int, *, pos: Pos | None = None) -> None:
    """Raise OwnerError unless `uid` and `gid` can own a file here (only in a user namespace can
    they not: the initial namespace maps every id)."""
    for kind, value in (("uid", uid), ("gid", gid)):
        if not is_mapped(kind, value):
            raise OwnerError(
                f"{path} must be owned by {kind} {value}, which does not exist in the builder's user "
                f"namespace (it maps {_describe(kind)})",
                hint=owner_hint(kind, value), pos=pos)


def only_own_ids() -> bool:
    """Rootless without subordinate ids: the namespace maps the user's own uid only, as 0."""
    ranges = id_map("uid")
    return in_user_namespace() and len(ranges) == 1 and ranges[0].count == 1


def run_failure_note() -> str | None:
    """What to add to a failed RUN's message when the namespace cannot represent other owners."""
    if not only_own_ids():
        return None
    user = os.environ.get("USER") or "USER"
    return (f"note: {user} has no subordinate ids, so only uid 0 and gid 0 exist in RUN; a chown or su to "
            "another id fails there (\"Invalid argument\"). To give RUN more ids, "
            + SUBID_HINT.format(user=user))


def setgroups_allowed() -> bool:
    """Whether a process here may set its supplementary groups (not when only the user's own ids
    are mapped: the kernel then requires setgroups to be denied)."""
    try:
        return Path("/proc/self/setgroups").read_text().strip() != "deny"
    except OSError:
        return True


def check_process_ids(what: str, uid: int, gid: int, groups: tuple[int, ...] = ()) -> None:
    """Raise OwnerError unless a process can run as uid:gid (and, where groups can be set at
    all, with `groups`) in this namespace; `what` says which process, e.g. "RUN as USER app"."""
    wanted = [("uid", uid), ("gid", gid)]
    if setgroups_allowed():
        wanted += [("gid", group) for group in groups]
    for kind, value in wanted:
        if not is_mapped(kind, value):
            raise OwnerError(f"{what} needs {kind} {value}, which does not exist in the builder's user namespace "
                             f"(it maps {_describe(kind)})", hint=owner_hint(kind, value))


def owner_error(path: str, uid: int, gid: int, error: OSError) -> BuildError:
    """The error to raise when giving `path` the owner uid:gid failed with `error`."""
    for kind, value in (("uid", uid), ("gid", gid)):
        if not is_mapped(kind, value):
            return OwnerError(
                f"{path} must be owned by {kind} {value}, which does not exist in the builder's user "
                f"namespace (it maps {_describe(kind)})",
                hint=owner_hint(kind, value))
    if os.geteuid() != 0:
        return OwnerError(f"cannot make {path} owned by {uid}:{gid}: {error.strerror}",
                          hint=owner_hint("uid", uid))
    return BuildError(f"cannot make {path} owned by {uid}:{gid}: {error.strerror}")


# --- subordinate ids ---------------------------------------------------------------------------


def subordinate_ranges(path: Path, name: str, number: int) -> list[tuple[int, int]]:
    """(first, count) of every range /etc/subuid-style `path` gives the user (by name or id)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SandboxError(f"cannot read {path}: {exc.strerror}") from exc
    ranges = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (name, str(number)):
            continue
        if fields[1].isdigit() and fields[2].isdigit() and int(fields[2]) > 0:
            ranges.append((int(fields[1]), int(fields[2])))
    return ranges


def _map_arguments(own: int, ranges: list[tuple[int, int]]) -> list[str]:
    """newuidmap's triples: own id as 0, then the ranges one after another from 1."""
    arguments = ["0", str(own), "1"]
    inside = 1
    for first, count in ranges:
        arguments += [str(inside), str(first), str(count)]
        inside += count
    return arguments


# --- entering ----------------------------------------------------------------------------------

def _read_sysctl(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _unshare_error(err: int) -> SandboxError:
    """Why this machine refuses a user namespace, and what to do about it."""
    if _read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        hint = "as root: sysctl -w kernel.unprivileged_userns_clone=1 (persist it in /etc/sysctl.d/)"
    elif _read_sysctl("/proc/sys/user/max_user_namespaces") == "0":
        hint = "as root: sysctl -w user.max_user_namespaces=15000 (persist it in /etc/sysctl.d/)"
    elif _read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        hint = ("AppArmor restricts user namespaces to programs with a profile that allows them: add one for "
                "this python (see apparmor.d's `userns,` rule) or, as root, sysctl -w "
                "kernel.apparmor_restrict_unprivileged_userns=0")
    else:
        hint = ("inside a container, its seccomp profile or missing privileges may forbid them "
                "(e.g. docker run --security-opt seccomp=unconfined); or run the builder as root")
    return SandboxError(f"cannot build as an ordinary user: user namespaces are disabled here ({os.strerror(err)})",
                        hint=hint)


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _start_mapper(tool: str, arguments: list[str]) -> subprocess.Popen:
    """newuidmap/newgidmap, started now (outside the namespace, where its setuid bit counts) and
    waiting for a line on its stdin: the namespace to map does not exist yet."""
    import subprocess

    return subprocess.Popen(["/bin/sh", "-c", 'read go && exec "$0" "$@"', tool, str(os.getpid()), *arguments],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if found is None:
        raise SandboxError(f"you have subordinate ids in /etc/subuid, but {name} is not installed",
                           hint="as root: apt-get install uidmap (it has newuidmap and newgidmap)")
    return found


def enter() -> None:
    """Move this process into a new user namespace where the calling user is root (nothing to do
    for root). Needs a single thread: call it before starting any."""
    if os.geteuid() == 0:
        return
    import ctypes

    if threading.active_count() != 1:
        raise SandboxError("cannot enter a user namespace from a process with several threads",
                           hint="call builder.userns.enter() before starting threads")
    uid, gid = os.getuid(), os.getgid()
    try:
        entry = pwd.getpwuid(uid)
        name, home = entry.pw_name, entry.pw_dir
    except KeyError:
        name, home = str(uid), None
    # Inside, getpwuid(0) is root's entry: the user's own name and home must come along.
    os.environ.setdefault("USER", name)
    if home:
        os.environ.setdefault("HOME", home)
    sub_uids = subordinate_ranges(SUBUID_FILE, name, uid)
    sub_gids = subordinate_ranges(SUBGID_FILE, name, uid)
    if bool(sub_uids) != bool(sub_gids):
        have, lack = ("/etc/subuid", "/etc/subgid") if sub_uids else ("/etc/subgid", "/etc/subuid")
        raise SandboxError(f"{name} has subordinate ids in {have} but none in {lack}",
                           hint=f"give {name} ranges in both: " + SUBID_HINT.format(user=name))
    mappers = []
    if sub_uids:
        mappers = [_start_mapper(_tool("newuidmap"), _map_arguments(uid, sub_uids)),
                   _start_mapper(_tool("newgidmap"), _map_arguments(gid, sub_gids))]
    try:
        if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWUSER) != 0:
            raise _unshare_error(ctypes.get_errno())
        if mappers:
            _run_mappers(mappers, name)
        else:
            # Only our own ids: the kernel lets us write that map ourselves, once setgroups is off.
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/gid_map", f"0 {gid} 1\n")
            _write("/proc/self/uid_map", f"0 {uid} 1\n")
    finally:
        for mapper in mappers:
            if mapper.poll() is None:
                mapper.kill()
                mapper.wait()
    _maps.clear()
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    if mappers:
        os.setgroups([])  # the host's supplementary groups do not exist in here


def _run_mappers(mappers: list[subprocess.Popen], name: str) -> None:
    for mapper in mappers:
        _, err = mapper.communicate(b"go\n", timeout=30)
        if mapper.returncode != 0:
            detail = err.decode("utf-8", "replace").strip() or f"exit status {mapper.returncode}"
            raise SandboxError(f"cannot map the subordinate ids of {name}: {detail}",
                               hint="check the entries of /etc/subuid and /etc/subgid and that newuidmap and "
                                    "newgidmap are setuid root (apt-get install --reinstall uidmap)")


def describe() -> str:
    """One line for errors and `builder info`: which ids the builder's namespace maps."""
    if not in_user_namespace():
        return "root in the initial user namespace" if os.geteuid() == 0 else f"uid {os.geteuid()}, no namespace"
    return f"rootless: {_describe('uid')}, {_describe('gid')}"


__all__ = ["FULL_MAP", "IdRange", "OwnerError", "check_owner", "describe", "describe_owner", "enter", "id_map", "in_user_namespace",
           "is_mapped", "is_overlay_xattr", "check_process_ids", "setgroups_allowed", "only_own_ids",
           "run_failure_note", "opaque_xattr", "overlay_xattr_prefix", "owner_error", "owner_hint",
           "subordinate_ranges"]
