"""Run one process in a snapshot's rootfs, in new mount/PID/UTS/IPC (and net) namespaces.

`unshare` (util-linux) makes the namespaces and runs init.py, which forks pid 1 of the new PID
namespace; that builds the mounts (overlay or bind of the copy, /proc, a minimal /dev, read-only /sys, /etc/hosts,
/etc/resolv.conf, /etc/hostname), pivots into the rootfs, creates WORKDIR, drops to the user
and execs the command, which thereby is pid 1.

Nothing outlives the builder: `setpriv --pdeathsig KILL` kills init's supervisor if the builder
dies (even by SIGKILL), pid 1 has the same death signal on the supervisor, and the kernel kills
the rest of the PID namespace with its pid 1. Every mount lives only in the sandbox's mount namespace and goes with it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Sequence

from builder.errors import SandboxError
from builder.sandbox.users import resolve_user
from builder.snapshot.base import ActiveSnapshot

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETWORK_MODES = ("host", "none")
INIT_SCRIPT = Path(__file__).with_name("init.py")
# Paths the sandbox mounts things on; they never show up in a diff unless the command made them.
INJECTED_FILES = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")
INJECTED_DIRS = ("/proc", "/dev", "/sys")


@dataclass(frozen=True)
class Bind:
    """A host file or dir bound into the sandbox at `target` (an in-image absolute path)."""

    source: Path
    target: str
    readonly: bool = True


def _hosts_content(hostname: str) -> str:
    return (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"127.0.1.1\t{hostname}\n"
    )


def _resolv_content(network: str) -> str:
    if network == "none":
        return ""
    try:
        return Path("/etc/resolv.conf").read_text()
    except OSError:
        return ""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SandboxError(f"{name} not found on this machine", hint="install util-linux")
    return path


def build_command(network: str) -> list[str]:
    """The host command that makes the namespaces and starts init (spec/status fds appended)."""
    command = [_tool("setpriv"), "--pdeathsig", "KILL",
               _tool("unshare"), "--mount", "--pid", "--uts", "--ipc", "--propagation", "private"]
    if network == "none":
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
    network: str = "host",
    hostname: str = "builder",
    on_output: Callable[[bytes], None] | None = None,
    stdin: int | IO[bytes] | None = None,
    extra_binds: Sequence[Bind] = (),
) -> int:
    """Run `argv` in the snapshot's rootfs; returns its exit status (128+N if killed by signal N).

    Output (stdout and stderr merged) goes to `on_output` chunk by chunk as it comes, or to the
    builder's own stdout/stderr if None. `stdin` defaults to /dev/null.
    """
    if network not in NETWORK_MODES:
        raise SandboxError(f"unknown network mode {network!r}", hint="use --network=host or --network=none")
    if not argv:
        raise SandboxError("no command to run", hint="give a command, or set CMD/ENTRYPOINT in the image")
    if not workdir.startswith("/"):
        workdir = "/" + workdir
    ids = resolve_user(user or "0", snapshot.view)

    bind_files = [b for b in extra_binds if not Path(b.source).is_dir()]
    bind_dirs = [b for b in extra_binds if Path(b.source).is_dir()]
    targets = snapshot.ensure_mount_points(
        files=list(INJECTED_FILES) + [b.target for b in bind_files],
        dirs=list(INJECTED_DIRS) + [b.target for b in bind_dirs],
    )

    files_dir = Path(tempfile.mkdtemp(prefix="i", dir=snapshot.work_dir))
    try:
        injected = {
            "/etc/hosts": _hosts_content(hostname),
            "/etc/resolv.conf": _resolv_content(network),
            "/etc/hostname": hostname + "\n",
        }
        binds = []
        for index, (path, content) in enumerate(injected.items()):
            source = files_dir / str(index)
            source.write_text(content)
            os.chmod(source, 0o644)
            if path in targets:
                binds.append({"source": str(source), "target": targets[path], "readonly": False})
        for bind in extra_binds:
            if bind.target in targets:
                binds.append({"source": str(Path(bind.source).resolve()), "target": targets[bind.target],
                              "readonly": bind.readonly})
        full_env = dict(env)
        full_env.setdefault("PATH", DEFAULT_PATH)
        overlay = snapshot.overlay
        spec = {
            "rootfs": str(snapshot.rootfs),
            "overlay": None if overlay is None else {
                "cwd": overlay.cwd, "options": overlay.options, "target": overlay.target},
            "mounts": {name.strip("/"): targets.get(name) for name in INJECTED_DIRS},
            "binds": binds,
            "hostname": hostname,
            "workdir": workdir,
            "uid": ids.uid,
            "gid": ids.gid,
            # The primary group is in the supplementary list too, as runc sets it.
            "groups": [ids.gid] + [g for g in ids.additional_gids if g != ids.gid],
            "env": full_env,
            "argv": list(argv),
        }
        return _launch(spec, network, on_output, stdin)
    finally:
        shutil.rmtree(files_dir, ignore_errors=True)


def _launch(spec: dict, network: str, on_output: Callable[[bytes], None] | None,
            stdin: int | IO[bytes] | None) -> int:
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
    with _LIVE_LOCK:
        _LIVE.add(process)
    try:
        try:
            with os.fdopen(spec_w, "wb") as handle:
                handle.write(json.dumps(spec).encode())
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
        os.close(status_r)
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(process)
        if process.stdout is not None:
            process.stdout.close()
    messages = []
    with os.fdopen(status_r, "rb") as handle:
        for line in handle.read().splitlines():
            try:
                messages.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a kill
    for message in messages:
        if "error" in message:
            hint = None
            if message.get("kind") == "exec":
                hint = "install it in an earlier step or use a base image that has it"
            raise SandboxError(message["error"], hint=hint)
    for message in messages:
        if "exit" in message:
            return int(message["exit"])
    raise SandboxError(f"the sandbox did not start (unshare exited with status {returncode})",
                       hint="the builder needs root (or CAP_SYS_ADMIN), util-linux and namespaces")


# Sandboxes running now, in any thread: Ctrl-C reaches only the main thread, which must be able
# to take down sandboxes that worker threads are waiting on.
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def kill_all() -> None:
    """Kill every sandbox this process is running; their `run` calls then return or raise."""
    with _LIVE_LOCK:
        running = list(_LIVE)
    for process in running:
        _kill(process)


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return  # already reaped: its pid (and group id) may belong to someone else now
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
