"""The sandbox's init: started by `unshare` in fresh mount/PID/UTS/IPC(/net) namespaces, it forks
pid 1 of the new PID namespace, which builds the container's mounts and becomes the command;
the supervisor waits and reports the exact exit status.

Run as `python3 -I -S init.py SPEC_FD STATUS_FD` (or `-m builder.sandbox.init`); it imports only
the standard library so it starts fast and needs no install. The JSON spec is read from SPEC_FD.
On STATUS_FD, one JSON object per line: {"started": true} from the supervisor as soon as it runs
(it is then in the new namespaces: the builder may attach a network to them before it sends
the spec), {"ready": true} just before exec, or {"error": ...} if setting up failed (the fd is
close-on-exec, so a setup failure is told apart from the command's own exit status), then
{"exit": N, "signal": S} from the supervisor.

What the command gets (see seccomp_filter.py for the syscalls): every mount but /dev's device
binds and devpts is nodev, so a device node the command makes (it keeps CAP_MKNOD, as under
Docker, since images do mknod) cannot be opened; /dev holds only null, zero, full, random,
urandom, tty, ptmx and pts. The rootfs keeps setuid (no nosuid, no no_new_privs), as Docker.
Host paths are bound only after opening them without following any symlink on the way.
Secrets and the files the builder injects live on a tmpfs of this mount namespace only.
Rootless (inside the builder's user namespace) the same holds; the kernel then refuses mknod
outright, and with the host's network the host's /sys is bound, every mount below it read-only.
"""
from __future__ import annotations

import base64
import ctypes
import errno
import fcntl
import json
import os
import platform
import signal
import socket
import stat
import struct
import sys

if __package__:  # imported as builder.sandbox.init
    from builder.sandbox import seccomp_filter
else:  # run as a script with -I, which leaves the script's dir off sys.path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    # The same module as above, found beside this file; mypy sees a second definition.
    import seccomp_filter  # type: ignore[no-redef]  # noqa: E402

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
# Like Docker: parts of /proc that reach the host's kernel settings are read-only, and some
# that leak host information are hidden behind /dev/null.
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
PROC_MASKED = ("kcore", "keys", "timer_list", "sched_debug", "latency_stats", "acpi", "scsi")

PR_CAPBSET_DROP = 24
# Docker's default capability set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
# SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP. A command in a
# RUN step cannot mount, load modules, change the clock, ... as it cannot under Docker.
DEFAULT_CAPS = frozenset({0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31})

# CDLL(None): the libc already loaded. find_library would fork a helper, and in a fresh PID
# namespace the first child forked becomes its pid 1 and takes the namespace down on exit.
_libc = ctypes.CDLL(None, use_errno=True)


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


def bind(source: str, target: str, *, readonly: bool, recursive: bool = False,
         flags: int = MS_NOSUID | MS_NODEV) -> None:
    """Bind `source` on `target`, then set the bind's own flags (a bind keeps its source mount's
    flags otherwise): nodev and nosuid unless told, read-only if asked."""
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    flags |= MS_RDONLY if readonly else 0
    if flags:
        mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def open_no_follow(path: str) -> int:
    """An O_PATH fd of the absolute `path`, walked one component at a time without following
    any symlink (RESOLVE_NO_SYMLINKS semantics): a link anywhere on the way is an error."""
    if not path.startswith("/"):
        raise SetupError(f"bind source {path!r} is not absolute")
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = [p for p in path.split("/") if p]
        for index, part in enumerate(parts):
            if part in (".", ".."):
                raise SetupError(f"bind source {path!r} is not a plain path")
            last = index == len(parts) - 1
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if last else os.O_DIRECTORY)
            try:
                child_fd = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                raise SetupError(f"cannot open bind source {path}: {exc.strerror} at {part!r} "
                                 "(a symlink on the way is refused)") from exc
            os.close(fd)
            fd = child_fd
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise SetupError(f"bind source {path} is a symlink")
        return fd
    except BaseException:
        os.close(fd)
        raise


def bind_verified(item: dict, target: str) -> None:
    """Bind a host path the builder checked: open it again here without following links, make
    sure it is the very file or dir the builder saw, and bind that open file."""
    fd = open_no_follow(item["source"])
    try:
        st = os.fstat(fd)
        is_dir = stat.S_ISDIR(st.st_mode)
        if (st.st_dev, st.st_ino) != (item["dev"], item["ino"]) or is_dir != item["is_dir"]:
            raise SetupError(f"bind source {item['source']} changed before it was mounted")
        if not is_dir and not stat.S_ISREG(st.st_mode):
            raise SetupError(f"bind source {item['source']} is not a regular file or directory")
        bind(f"/proc/self/fd/{fd}", target, readonly=item.get("readonly", False), recursive=True)
    finally:
        os.close(fd)


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
    # nodev: a node made here cannot be opened; the allowed nodes are binds (own mounts, with dev).
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755,size=65536k")
    for name in DEV_NODES:
        target = os.path.join(dev, name)
        open(target, "w").close()
        try:
            bind(f"/dev/{name}", target, readonly=False, flags=MS_NOSUID | MS_NOEXEC)
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


def mount_proc(target: str) -> None:
    mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_READ_ONLY:
        path = os.path.join(target, name)
        if os.path.exists(path):
            bind(path, path, readonly=True, recursive=True, flags=MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_MASKED:
        path = os.path.join(target, name)
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0")
        elif os.path.exists(path):
            bind("/dev/null", path, readonly=True, flags=MS_NOSUID | MS_NOEXEC)  # reads as empty


def drop_capabilities() -> None:
    """Shrink the bounding set to Docker's defaults; exec then gives root no more than that."""
    for cap in range(64):
        if cap in DEFAULT_CAPS:
            continue
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                break  # past the last capability this kernel knows
            raise SetupError(f"cannot drop capability {cap}: {os.strerror(ctypes.get_errno())}")


def mount_sys(target: str) -> None:
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    try:
        mount("sysfs", target, "sysfs", flags)
    except SetupError:
        # No sysfs of our own (rootless with the host's network: that namespace is not ours):
        # the host's /sys, whose submounts (cgroups, ...) must come along in a user namespace,
        # all of them read-only.
        bind("/sys", target, readonly=True, recursive=True, flags=MS_NOSUID | MS_NODEV | MS_NOEXEC)
        read_only_below(target)


MOUNT_SETATTR_SYSCALL = 442  # the same number on every architecture (Linux 5.12)
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8


def read_only_below(target: str) -> None:
    """Make `target` and every mount below it read-only, nosuid, nodev and noexec."""
    attr = struct.pack("=QQQQ", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                       0, 0, 0)
    buf = ctypes.create_string_buffer(attr, len(attr))
    rc = _libc.syscall(ctypes.c_long(MOUNT_SETATTR_SYSCALL), ctypes.c_int(AT_FDCWD), os.fsencode(target),
                       ctypes.c_uint(AT_RECURSIVE), buf, ctypes.c_size_t(len(attr)))
    if rc == 0:
        return
    if ctypes.get_errno() != errno.ENOSYS:
        _check(rc, f"make {target} read-only")
    # An older kernel: one mount at a time, as /proc/self/mountinfo lists them (parents first).
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    for point in points:
        point = point.encode().decode("unicode_escape")  # mountinfo escapes spaces as \040
        if point == target or point.startswith(target.rstrip("/") + "/"):
            mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def stage_files(staging: str, files: list[dict]) -> list[str]:
    """Write the given files (secrets, /etc/hosts, ...) on a tmpfs mounted on `staging` in this
    mount namespace only, with their owner and mode; returns their paths there. Once they are
    bound into the rootfs the tmpfs is detached from `staging`: the content never touches a disk
    and goes away with the namespace, even if the builder is killed."""
    size = sum(len(item["data"]) for item in files) + 4096 * (len(files) + 1)
    mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=700,size={size}")
    paths = []
    for index, item in enumerate(files):
        path = os.path.join(staging, str(index))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            data = base64.b64decode(item["data"])
            while data:
                data = data[os.write(fd, data):]
            os.fchown(fd, item.get("uid", 0), item.get("gid", 0))
            os.fchmod(fd, item.get("mode", 0o644))
        finally:
            os.close(fd)
        paths.append(path)
    return paths


def mount_tmpfs(target: str, size: int | None) -> None:
    options = "mode=1777" + (f",size={size}" if size else "")
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options)


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    """A fresh network namespace starts with `lo` down; bring it up as Docker does."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))


def setup(spec: dict) -> None:
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    rootfs = spec["rootfs"]
    overlay = spec.get("overlay")
    if overlay:
        os.chdir(overlay["cwd"])  # lowerdirs are short paths relative to here
        mount("overlay", overlay["target"], "overlay", MS_NODEV, overlay["options"])
        os.chdir("/")
    else:
        # pivot_root needs a mount point; nodev but not nosuid: setuid programs of the image work.
        bind(rootfs, rootfs, readonly=False, recursive=True, flags=MS_NODEV)

    mounts = spec.get("mounts", {})
    if mounts.get("proc"):
        mount_proc(inside(rootfs, mounts["proc"]))
    if mounts.get("dev"):
        mount_dev(inside(rootfs, mounts["dev"]))
    if mounts.get("sys"):
        mount_sys(inside(rootfs, mounts["sys"]))
    extra = spec.get("extra", [])
    files = [item for item in extra if item["type"] == "file"]
    staged = iter(stage_files(spec["files_dir"], files) if files else [])
    for item in extra:  # in the order given: a later mount may sit on an earlier one
        target = inside(rootfs, item["target"])
        if item["type"] == "bind":
            bind_verified(item, target)
        elif item["type"] == "tmpfs":
            mount_tmpfs(target, item.get("size"))
        elif item["type"] == "file":
            bind(next(staged), target, readonly=item.get("readonly", False),
                 flags=MS_NOSUID | MS_NODEV | MS_NOEXEC)
        else:
            raise SetupError(f"unknown mount type {item['type']!r}")
    if files:
        _check(_libc.umount2(os.fsencode(spec["files_dir"]), MNT_DETACH), "detach the files tmpfs")

    if spec.get("loopback_up"):
        loopback_up()
    if spec.get("hostname"):
        socket.sethostname(spec["hostname"])
    pivot_root(rootfs)


def enter(spec: dict, syscall_filter: "seccomp_filter.Filter") -> None:
    workdir = spec.get("workdir") or "/"
    uid, gid = spec.get("uid", 0), spec.get("gid", 0)
    # The container's umask is Docker's 0022 whatever the builder's is: layers must not
    # depend on the umask of whoever ran the build.
    os.umask(0o022)
    if not os.path.isdir(workdir):
        try:
            make_workdir(workdir, uid, gid)
        except OSError as exc:
            raise SetupError(f"cannot create working directory {workdir}: {exc.strerror}") from exc
    drop_capabilities()
    # The last thing done with CAP_SYS_ADMIN (a filter without no_new_privs needs it); what
    # follows (setgroups, setuid, chdir, stat, execve) is all allowed by the filter.
    try:
        syscall_filter.load()
    except seccomp_filter.SeccompUnavailable as exc:
        raise SetupError(str(exc), kind="seccomp") from exc
    if spec.get("set_groups", True):
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
    elif not os.path.lexists(program):
        raise SetupError(f"cannot run {program!r}: no such file in the image", kind="exec", code=127)
    _report(status_fd, {"ready": True})
    try:
        os.execve(program, argv, env)
    except OSError as exc:
        code = 127 if exc.errno in (errno.ENOENT, errno.ENOTDIR) else 126
        hint = ""
        if exc.errno == errno.ENOENT and os.path.exists(program):
            hint = " (its interpreter or loader is missing from the image)"
        kind = "exec-format" if exc.errno == errno.ENOEXEC else "exec"
        raise SetupError(f"cannot run {argv[0]!r}: {exc.strerror}{hint}", kind=kind, code=code) from exc


PR_SET_PDEATHSIG = 1


def _report(status_fd: int, message: dict) -> None:
    try:
        os.write(status_fd, json.dumps(message).encode() + b"\n")
    except OSError:
        pass


def child(spec: dict, status_fd: int, alive_fd: int) -> int:
    """Pid 1 of the new PID namespace: build the mounts and become the command."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The supervisor holds the other end of `alive_fd` open; EOF means it died before prctl
    # took effect (getppid() cannot tell: the parent is outside this PID namespace).
    os.set_blocking(alive_fd, False)
    try:
        if os.read(alive_fd, 1) == b"":
            return 125
    except BlockingIOError:
        pass
    os.close(alive_fd)
    try:
        try:  # built while the host's libseccomp can still be loaded, before pivot_root
            syscall_filter = seccomp_filter.Filter(spec.get("seccomp_library") or seccomp_filter.LIBRARY)
        except seccomp_filter.SeccompUnavailable as exc:
            raise SetupError(str(exc), kind="seccomp") from exc
        setup(spec)
        enter(spec, syscall_filter)
        exec_command(spec, status_fd)
    except SetupError as exc:
        _report(status_fd, {"kind": exc.kind, "error": str(exc), "code": exc.code})
        return exc.code
    except OSError as exc:
        _report(status_fd, {"kind": "setup", "error": str(exc)})
        return 125
    return 0  # not reached: exec replaced us


def main(argv: list[str] | None = None) -> int:
    """Supervisor: fork pid 1 of the new PID namespace, wait for it, report how it ended.

    unshare cannot pass on a death by SIGKILL (it tries to re-raise the signal on itself),
    so the exact status is written on the status fd as {"exit": code, "signal": n}.
    """
    args = sys.argv[1:] if argv is None else argv
    spec_fd, status_fd = int(args[0]), int(args[1])
    os.set_inheritable(status_fd, False)
    os.set_inheritable(spec_fd, False)
    _report(status_fd, {"started": True})
    with os.fdopen(spec_fd, "rb") as handle:
        spec = json.loads(handle.read())
    alive_r, alive_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 125
        try:
            os.close(alive_w)
            code = child(spec, status_fd, alive_r)
        finally:
            os._exit(code)
    os.close(alive_r)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 125 << 8
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        _report(status_fd, {"exit": 128 + os.WTERMSIG(status), "signal": os.WTERMSIG(status)})
        return 128 + os.WTERMSIG(status)
    code = os.WEXITSTATUS(status)
    _report(status_fd, {"exit": code, "signal": 0})
    return code


if __name__ == "__main__":
    sys.exit(main())
