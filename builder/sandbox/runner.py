"""Run one process in a snapshot's rootfs, in new mount/PID/UTS/IPC (and net) namespaces.

`unshare` (util-linux) makes the namespaces and runs init.py, which forks pid 1 of the new PID
namespace; that builds the mounts (overlay or bind of the copy, /proc, a minimal /dev, read-only /sys, /etc/hosts,
/etc/resolv.conf and, like docker run, /etc/hostname), pivots into the rootfs, creates WORKDIR, installs the seccomp
filter, drops to the user and execs the command, which thereby is pid 1. A RUN step gets
BuildKit's /etc instead (`BUILDKIT_RUN_ETC`): hosts and resolv.conf read-only, no hostname file.

Network modes: "default" is a private network namespace with outbound access through
slirp4netns (network.py), "none" a private namespace with only `lo`, "host" the host's own.

Host paths given as `Bind`s are never resolved here: a source that is a symlink (or has one on
its way, which init refuses) or is neither a regular file nor a directory is an error. Secrets
and the injected files reach init over the spec pipe and live on a tmpfs of the sandbox's
mount namespace only; `Tmpfs` mounts are real tmpfs mounts there.

Nothing outlives the builder: `setpriv --pdeathsig KILL` kills init's supervisor if the builder
dies (even by SIGKILL), pid 1 has the same death signal on the supervisor, and the kernel kills
the rest of the PID namespace with its pid 1. Every mount lives only in the sandbox's mount namespace and goes with it.

Rootless (builder.userns), the builder already is root of a user namespace, and all of the above
happens inside it: ids the namespace does not map (USER, a secret's owner) are errors before
anything starts, supplementary groups are left alone where the kernel forbids setting them (only
the user's own ids mapped), and the default network needs a /dev/net/tun the user may open.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Sequence

from builder.errors import SandboxError
from builder.sandbox import network as user_network
from builder.sandbox.users import home_of_uid, resolve_user
from builder.snapshot.base import ActiveSnapshot
from builder.userns import check_owner, check_process_ids, in_user_namespace, setgroups_allowed

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETWORK_MODES = ("default", "host", "none")
# The library init loads to filter syscalls (a test points it elsewhere to see the error).
SECCOMP_LIBRARY = "libseccomp.so.2"
INIT_SCRIPT = Path(__file__).with_name("init.py")
# Files the sandbox mounts (see EtcFiles); made for the mount if missing and then never in a diff
# unless the command changed them (BuildKit's mount stub cleaner does the same).
INJECTED_FILES = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")
# The runtime's own mount points: made if missing and left in the layer as empty dirs, as runc
# makes them and BuildKit keeps them.
INJECTED_DIRS = ("/proc", "/dev", "/sys")


@dataclass(frozen=True)
class Bind:
    """A host file or dir bound into the sandbox at `target` (an in-image absolute path)."""

    source: Path
    target: str
    readonly: bool = True


@dataclass(frozen=True)
class Tmpfs:
    """A fresh tmpfs at `target`, mounted inside the sandbox (nothing of it reaches a disk)."""

    target: str
    size: int | None = None  # bytes; None: the kernel's default


@dataclass(frozen=True)
class SecretFile:
    """A read-only file at `target` whose content exists only in the sandbox's memory."""

    target: str
    data: bytes = field(repr=False)
    mode: int = 0o400
    uid: int = 0
    gid: int = 0


ExtraMount = Bind | Tmpfs | SecretFile


@dataclass(frozen=True)
class EtcFiles:
    """Which files the sandbox binds into /etc, and how."""

    hostname_file: bool  # bind an /etc/hostname too
    readonly: bool  # hosts and resolv.conf cannot be written through
    buildkit_hosts: bool  # /etc/hosts as BuildKit writes it (the hostname on the localhost line)

    def files(self) -> tuple[str, ...]:
        return INJECTED_FILES if self.hostname_file else INJECTED_FILES[:2]

    def hosts(self, hostname: str) -> str:
        if self.buildkit_hosts:
            return f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        return (
            "127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"127.0.1.1\t{hostname}\n"
        )


# A container's own files, as docker run gives them.
CONTAINER_ETC = EtcFiles(hostname_file=True, readonly=False, buildkit_hosts=False)
# What a RUN step gets under BuildKit: hosts and resolv.conf bound read-only, and no
# /etc/hostname, so one the command writes lands in the layer.
BUILDKIT_RUN_ETC = EtcFiles(hostname_file=False, readonly=True, buildkit_hosts=True)


def _resolv_content(network: str) -> str:
    if network == "none":
        return ""
    try:
        host = Path("/etc/resolv.conf").read_text()
    except OSError:
        host = ""
    return host if network == "host" else user_network.resolv_conf(host)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SandboxError(f"{name} not found on this machine", hint="install util-linux")
    return path


def build_command(network: str) -> list[str]:
    """The host command that makes the namespaces and starts init (spec/status fds appended)."""
    command = [_tool("setpriv"), "--pdeathsig", "KILL",
               _tool("unshare"), "--mount", "--pid", "--uts", "--ipc", "--propagation", "private"]
    if network != "host":
        command.append("--net")
    command += ["--", sys.executable, "-I", "-S", str(INIT_SCRIPT)]
    return command


def run(
    snapshot: ActiveSnapshot,
    argv: list[str],
    *,
    env: dict[str, str],
    workdir: str,
    user: str | None,
    network: str = "default",
    hostname: str = "builder",
    on_output: Callable[[bytes], None] | None = None,
    stdin: int | IO[bytes] | None = None,
    extra_binds: Sequence[ExtraMount] = (),
    group: "SandboxGroup | None" = None,
    etc: EtcFiles = CONTAINER_ETC,
) -> int:
    """Run `argv` in the snapshot's rootfs; returns its exit status (128+N if killed by signal N).

    Output (stdout and stderr merged) goes to `on_output` chunk by chunk as it comes, or to the
    builder's own stdout/stderr if None. `stdin` defaults to /dev/null. `extra_binds` are the
    step's own mounts, in order: host paths (`Bind`), `Tmpfs` and `SecretFile`. The sandbox
    joins `group` while it runs, so its owner can kill it (and only its own) early. `etc` says
    which /etc files are bound (a container's, or a BuildKit RUN step's).
    """
    if network not in NETWORK_MODES:
        raise SandboxError(f"unknown network mode {network!r}",
                           hint="use --network=default, --network=host or --network=none")
    if not argv:
        raise SandboxError("no command to run", hint="give a command, or set CMD/ENTRYPOINT in the image")
    if os.geteuid() != 0:
        raise SandboxError("the sandbox needs root, or a user namespace in which the builder is root",
                           hint="the builder command enters one by itself for an ordinary user; a program using "
                                "the library calls builder.userns.enter() first, while it has one thread")
    if network == "default":
        user_network.slirp_tool()  # fail before any work if the private network cannot be had
    if not workdir.startswith("/"):
        workdir = "/" + workdir
    ids = resolve_user(user or "0", snapshot.view)
    # Rootless, an id outside the namespace's map would fail deep in init with EINVAL: say which.
    check_process_ids(f"running as user {user or '0'!r}", ids.uid, ids.gid, ids.additional_gids)
    for mount in extra_binds:
        if isinstance(mount, SecretFile):
            check_owner(f"the secret mounted at {mount.target}", mount.uid, mount.gid)

    checked = {id(m): _check_bind_source(m) for m in extra_binds if isinstance(m, Bind)}
    file_targets = [m.target for m in extra_binds
                    if isinstance(m, SecretFile) or (isinstance(m, Bind) and not checked[id(m)]["is_dir"])]
    dir_targets = [m.target for m in extra_binds
                   if isinstance(m, Tmpfs) or (isinstance(m, Bind) and checked[id(m)]["is_dir"])]
    targets = snapshot.ensure_mount_points(files=list(etc.files()) + file_targets, dirs=dir_targets,
                                           kept_dirs=INJECTED_DIRS)

    # An empty mount point for the tmpfs that holds secrets and injected files inside the sandbox.
    files_dir = Path(tempfile.mkdtemp(prefix="i", dir=snapshot.work_dir))
    try:
        injected = {
            "/etc/hosts": etc.hosts(hostname),
            "/etc/resolv.conf": _resolv_content(network),
            "/etc/hostname": hostname + "\n",
        }
        extra: list[dict] = []
        for path in etc.files():
            if path in targets:
                extra.append(_file_entry(targets[path], injected[path].encode(), mode=0o644, readonly=etc.readonly))
        for mount in extra_binds:
            if mount.target not in targets:
                continue  # the image has something of another type there
            target = targets[mount.target]
            if isinstance(mount, Bind):
                extra.append({"type": "bind", "target": target, "readonly": mount.readonly,
                              **checked[id(mount)]})
            elif isinstance(mount, Tmpfs):
                extra.append({"type": "tmpfs", "target": target, "size": mount.size})
            else:
                extra.append(_file_entry(target, mount.data, mode=mount.mode, uid=mount.uid,
                                         gid=mount.gid, readonly=True))
        full_env = dict(env)
        full_env.setdefault("PATH", DEFAULT_PATH)
        if not full_env.get("HOME"):
            # runc's rule, so RUN steps and `builder run` both have it: an empty HOME counts as
            # none, and the one from the user's passwd entry comes last.
            full_env.pop("HOME", None)
            full_env["HOME"] = home_of_uid(ids.uid, snapshot.view)
        overlay = snapshot.overlay
        spec = {
            "rootfs": str(snapshot.rootfs),
            "overlay": None if overlay is None else {
                "cwd": overlay.cwd, "options": overlay.options, "target": overlay.target},
            "mounts": {name.strip("/"): targets.get(name) for name in INJECTED_DIRS},
            "extra": extra,
            "files_dir": str(files_dir),
            "loopback_up": network == "none",  # slirp4netns brings it up in the default mode
            "seccomp_library": SECCOMP_LIBRARY,
            "hostname": hostname,
            "workdir": workdir,
            "uid": ids.uid,
            "gid": ids.gid,
            # The primary group is in the supplementary list too, as runc sets it.
            "groups": [ids.gid] + [g for g in ids.additional_gids if g != ids.gid],
            # Not where only the user's own ids are mapped (rootless without subordinate ids).
            "set_groups": setgroups_allowed(),
            "env": full_env,
            "argv": list(argv),
        }
        return _launch(spec, network, on_output, stdin, group)
    finally:
        shutil.rmtree(files_dir, ignore_errors=True)


def _check_bind_source(bind: Bind) -> dict:
    """What init must find at a bind's source: never resolved or followed here (lstat), only
    a regular file or a directory, identified by device and inode so init can tell it is the
    very same file when it opens it again without following links."""
    source = os.path.abspath(os.fspath(bind.source))  # lexical: no link is resolved
    try:
        st = os.lstat(source)
    except OSError as exc:
        raise SandboxError(f"cannot mount {source} at {bind.target}: {exc.strerror}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise SandboxError(f"refusing to mount {source} at {bind.target}: it is a symlink",
                           hint="a mount source is resolved inside its own root before it is staged; "
                                "a symlink left here would point into the host")
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise SandboxError(f"refusing to mount {source} at {bind.target}: not a regular file or directory")
    return {"source": source, "dev": st.st_dev, "ino": st.st_ino, "is_dir": stat.S_ISDIR(st.st_mode)}


def _file_entry(target: str, data: bytes, *, mode: int, readonly: bool, uid: int = 0, gid: int = 0) -> dict:
    return {"type": "file", "target": target, "data": base64.b64encode(data).decode("ascii"),
            "mode": mode, "uid": uid, "gid": gid, "readonly": readonly}


def _launch(spec: dict, network: str, on_output: Callable[[bytes], None] | None,
            stdin: int | IO[bytes] | None, group: "SandboxGroup | None") -> int:
    spec_r, spec_w = os.pipe()
    status_r, status_w = os.pipe()
    command = build_command(network) + [str(spec_r), str(status_w)]
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=subprocess.PIPE if on_output is not None else None,
            stderr=subprocess.STDOUT if on_output is not None else None,
            pass_fds=(spec_r, status_w),
            start_new_session=True,  # its own process group: killed as one, no terminal signals
        )
    except OSError as exc:
        for fd in (spec_r, spec_w, status_r, status_w):
            os.close(fd)
        raise SandboxError(f"cannot start the sandbox: {exc}") from exc
    os.close(spec_r)
    os.close(status_w)
    status = os.fdopen(status_r, "rb")
    spec_out = os.fdopen(spec_w, "wb")
    attached: user_network.UserModeNetwork | None = None
    first_status = b""
    for owner in (_ALL, group):
        if owner is not None:
            owner.add(process)
    try:
        if network == "default":
            # Once init says it runs, it is in its own network namespace: attach slirp4netns
            # there and send the spec (which lets the command start) only when the network is up.
            first_status = status.readline()
            if b'"started"' in first_status:
                attached = user_network.UserModeNetwork(process.pid)
        try:
            with spec_out:
                spec_out.write(json.dumps(spec).encode())
        except BrokenPipeError:
            pass  # init died before reading its spec; its status (or none) tells why
        if on_output is not None and process.stdout is not None:
            fd = process.stdout.fileno()
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                on_output(chunk)
        returncode = process.wait()
    except BaseException:
        # Ctrl-C, an error in on_output, ...: take the whole sandbox down before going on.
        _kill(process)
        status.close()
        raise
    finally:
        spec_out.close()
        for owner in (_ALL, group):
            if owner is not None:
                owner.discard(process)
        if process.stdout is not None:
            process.stdout.close()
        if attached is not None:
            attached.close()
    messages = []
    with status:
        for line in [first_status] + status.read().splitlines():
            try:
                messages.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a kill
    for message in messages:
        if "error" in message:
            hint = None
            if message.get("kind") == "exec":
                hint = "install it in an earlier step or use a base image that has it"
            elif message.get("kind") == "exec-format":
                hint = ("a program for another architecture? RUN for a foreign --platform needs binfmt_misc"
                        " emulation on the host (e.g. Debian's qemu-user-static)")
            elif message.get("kind") == "seccomp":
                hint = "apt-get install libseccomp2: RUN steps never run without their syscall filter"
            error = SandboxError(message["error"], hint=hint)
            # What docker run exits with when the command cannot start (127 not found, 126 not runnable).
            code = message.get("code")
            error.command_status = code if isinstance(code, int) and not isinstance(code, bool) and code else None
            raise error
    for message in messages:
        if "exit" in message:
            return int(message["exit"])
    if in_user_namespace():
        hint = ("rootless RUN needs the kernel to allow mount, PID, network, UTS and IPC namespaces inside a "
                "user namespace, and util-linux's unshare and setpriv")
    else:
        hint = "the builder needs root (or CAP_SYS_ADMIN), util-linux and namespaces"
    raise SandboxError(f"the sandbox did not start (unshare exited with status {returncode})", hint=hint)


class SandboxGroup:
    """Sandboxes started on behalf of one owner (one build): killed together, and only they."""

    def __init__(self) -> None:
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def add(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.add(process)

    def discard(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(process)

    def kill(self) -> None:
        """Kill every sandbox of the group; their `run` calls then return or raise."""
        with self._lock:
            running = list(self._running)
        for process in running:
            _kill(process)


# Every sandbox this process runs, in any thread: the CLI's Ctrl-C handler may take them all down.
_ALL = SandboxGroup()


def kill_all() -> None:
    """Kill every sandbox this process is running (any build, any thread)."""
    _ALL.kill()


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return  # already reaped: its pid (and group id) may belong to someone else now
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
