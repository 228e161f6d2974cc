"""The sandbox's init: runs as pid 1 of fresh mount/PID/UTS/IPC(/net) namespaces made by
`unshare`, builds the container's mounts, then becomes the command.

Run as `python3 -I -S init.py SPEC_FD STATUS_FD` (or `-m builder.sandbox.init`); it imports only
the standard library so it starts fast and needs no install. The JSON spec is read from SPEC_FD.
On STATUS_FD it writes b"R" just before exec, or b"E" + a JSON error if setting up failed;
the descriptor is close-on-exec, so the builder can tell a setup failure from the command's
own exit status.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import platform
import socket
import stat
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PIVOT_ROOT_SYSCALL = {
    "x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "ppc64": 203,
    "s390x": 217, "i686": 217, "i386": 217, "armv7l": 218,
}

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class SetupError(Exception):
    """A step of building the container failed; `kind` tells the builder which error to raise."""

    def __init__(self, message: str, kind: str = "setup", code: int = 125) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            None if source is None else os.fsencode(source),
            os.fsencode(target),
            None if fstype is None else fstype.encode(),
            ctypes.c_ulong(flags),
            None if data is None else data.encode(),
        ),
        f"mount {fstype or source} on {target}",
    )


def bind(source: str, target: str, *, readonly: bool, recursive: bool = False) -> None:
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def pivot_root(new_root: str) -> None:
    """Make `new_root` the root and detach the old one (the pivot_root(".", ".") idiom)."""
    number = PIVOT_ROOT_SYSCALL.get(platform.machine())
    os.chdir(new_root)
    if number is None:  # unknown arch: chroot is weaker but still confines paths
        os.chroot(".")
        return
    _check(_libc.syscall(ctypes.c_long(number), b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "unmount old root")
    os.chdir("/")


def inside(rootfs: str, canonical: str) -> str:
    """Host path of an in-image path that the builder resolved; refuses symlinks on the way so
    a mount can never land outside the rootfs."""
    path = rootfs
    for part in [p for p in canonical.split("/") if p]:
        if part in (".", ".."):
            raise SetupError(f"bad mount target {canonical!r}")
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise SetupError(f"mount target {canonical} is a symlink in the image")
    return path


def mount_dev(dev: str) -> None:
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k")
    for name in DEV_NODES:
        target = os.path.join(dev, name)
        open(target, "w").close()
        try:
            bind(f"/dev/{name}", target, readonly=False)
        except SetupError:
            os.unlink(target)  # e.g. no /dev/tty on the host
    os.mkdir(os.path.join(dev, "pts"))
    mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
          "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.mkdir(os.path.join(dev, "shm"))
    mount("shm", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    os.mkdir(os.path.join(dev, "mqueue"))
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("core", "/proc/kcore")):
        os.symlink(target, os.path.join(dev, name))


def mount_sys(target: str) -> None:
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    try:
        mount("sysfs", target, "sysfs", flags)
    except SetupError:
        bind("/sys", target, readonly=True, recursive=True)


def setup(spec: dict) -> None:
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    rootfs = spec["rootfs"]
    overlay = spec.get("overlay")
    if overlay:
        os.chdir(overlay["cwd"])  # lowerdirs are short paths relative to here
        mount("overlay", overlay["target"], "overlay", 0, overlay["options"])
        os.chdir("/")
    else:
        bind(rootfs, rootfs, readonly=False, recursive=True)  # pivot_root needs a mount point

    mounts = spec.get("mounts", {})
    if mounts.get("proc"):
        mount("proc", inside(rootfs, mounts["proc"]), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if mounts.get("dev"):
        mount_dev(inside(rootfs, mounts["dev"]))
    if mounts.get("sys"):
        mount_sys(inside(rootfs, mounts["sys"]))
    for item in spec.get("binds", []):
        bind(item["source"], inside(rootfs, item["target"]), readonly=item.get("readonly", False),
             recursive=True)

    if spec.get("hostname"):
        socket.sethostname(spec["hostname"])
    pivot_root(rootfs)


def enter(spec: dict) -> None:
    workdir = spec.get("workdir") or "/"
    uid, gid = spec.get("uid", 0), spec.get("gid", 0)
    if not os.path.isdir(workdir):
        try:
            make_workdir(workdir, uid, gid)
        except OSError as exc:
            raise SetupError(f"cannot create working directory {workdir}: {exc.strerror}") from exc
    os.setgroups(spec.get("groups", []))
    os.setgid(gid)
    os.setuid(uid)
    try:
        os.chdir(workdir)
    except OSError as exc:
        raise SetupError(f"cannot change to working directory {workdir}: {exc.strerror}") from exc


def make_workdir(workdir: str, uid: int, gid: int) -> None:
    """mkdir -p, the created dirs owned by the user the command runs as (as BuildKit does)."""
    missing: list[str] = []
    path = workdir
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    os.makedirs(workdir, mode=0o755, exist_ok=True)
    for created in reversed(missing):
        os.chown(created, uid, gid)
        os.chmod(created, 0o755)


def exec_command(spec: dict, status_fd: int) -> None:
    argv = spec["argv"]
    env = spec["env"]
    if not argv:
        raise SetupError("no command given", kind="exec", code=127)
    program = argv[0]
    if "/" not in program:
        found = None
        for directory in env.get("PATH", "").split(":"):
            candidate = os.path.join(directory or ".", program)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                found = candidate
                break
        if found is None:
            raise SetupError(f"executable file not found in $PATH: {program!r} "
                             f"(PATH={env.get('PATH', '')})", kind="exec", code=127)
        program = found
    os.write(status_fd, b"R")
    try:
        os.execve(program, argv, env)
    except OSError as exc:
        code = 127 if exc.errno in (errno.ENOENT, errno.ENOTDIR) else 126
        hint = ""
        if exc.errno == errno.ENOENT and os.path.exists(program):
            hint = " (its interpreter or loader is missing from the image)"
        raise SetupError(f"cannot run {argv[0]!r}: {exc.strerror}{hint}", kind="exec", code=code) from exc


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec_fd, status_fd = int(args[0]), int(args[1])
    os.set_inheritable(status_fd, False)
    os.set_inheritable(spec_fd, False)
    with os.fdopen(spec_fd, "rb") as handle:
        spec = json.loads(handle.read())
    try:
        setup(spec)
        enter(spec)
        exec_command(spec, status_fd)
    except SetupError as exc:
        message = {"kind": exc.kind, "error": str(exc)}
        try:
            os.write(status_fd, b"E" + json.dumps(message).encode())
        except OSError:
            pass
        return exc.code
    except OSError as exc:
        try:
            os.write(status_fd, b"E" + json.dumps({"kind": "setup", "error": str(exc)}).encode())
        except OSError:
            pass
        return 125
    return 0  # not reached: exec replaced us


if __name__ == "__main__":
    sys.exit(main())
