"""RUN's default network: a private network namespace that slirp4netns gives outbound access.

The sandbox's namespace holds `lo` and `tap0` (10.0.2.100/24, gateway 10.0.2.2, DNS forwarder
10.0.2.3); slirp4netns, a user-mode TCP/IP stack running on the host, turns the namespace's
packets into ordinary sockets of its own. With --disable-host-loopback it refuses connections
to the host's 127.0.0.1, so services bound to the host's loopback stay out of reach, as they
are from a Docker build. slirp4netns runs in a sandbox and under a seccomp filter of its own,
and exits when the builder closes (or, killed, loses) the exit pipe.
"""
from __future__ import annotations

import os
import select
import shutil
import subprocess
import threading
import time

from builder.errors import SandboxError

SLIRP_DNS = "10.0.2.3"
READY_TIMEOUT = 30.0
INSTALL_HINT = ("install slirp4netns (apt-get install slirp4netns), or choose --network=host "
                "(the host's network, services on its loopback included) or --network=none")


TUN_DEVICE = "/dev/net/tun"


def slirp_tool() -> str:
    """The slirp4netns binary, or a clear error: without it RUN falls back to nothing silently."""
    path = shutil.which("slirp4netns")
    if path is None:
        raise SandboxError("RUN's default network needs slirp4netns, which is not installed",
                           hint=INSTALL_HINT)
    if not os.access(TUN_DEVICE, os.R_OK | os.W_OK):
        # Root can always open it; an ordinary user (rootless) only if its mode lets everyone.
        raise SandboxError(f"RUN's default network needs {TUN_DEVICE}, which this user cannot open",
                           hint=f"as root: chmod 0666 {TUN_DEVICE} (its usual mode, as udev sets it: the device "
                                "gives nobody more than their own network namespace), or choose --network=host "
                                "or --network=none")
    return path


def resolv_conf(host_text: str) -> str:
    """The sandbox's /etc/resolv.conf: slirp's DNS forwarder, the host's search domains and options."""
    kept = [line for line in host_text.splitlines() if line.split()[:1] in (["search"], ["domain"], ["options"])]
    return f"nameserver {SLIRP_DNS}\n" + "".join(line + "\n" for line in kept)


class UserModeNetwork:
    """slirp4netns attached to the network namespace of process `pid` until `close()`."""

    _exit_w: int | None  # None once closed

    def __init__(self, pid: int) -> None:
        tool = slirp_tool()
        ns_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            ours = os.stat("/proc/self/ns/net")
            theirs = os.fstat(ns_fd)
            if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
                # Configuring tap0 in the builder's own namespace would change the host's network.
                raise SandboxError("the sandbox has no network namespace of its own")
            ready_r, ready_w = os.pipe()
            exit_r, self._exit_w = os.pipe()
            try:
                self.process = subprocess.Popen(
                    [tool, "--configure", "--mtu=65520", "--disable-host-loopback",
                     "--enable-sandbox", "--enable-seccomp",
                     f"--ready-fd={ready_w}", f"--exit-fd={exit_r}",
                     "--netns-type=path", f"/proc/self/fd/{ns_fd}", "tap0"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    pass_fds=(ready_w, exit_r, ns_fd), start_new_session=True,
                )
            except OSError as exc:
                os.close(ready_r)
                os.close(self._exit_w)
                raise SandboxError(f"cannot start slirp4netns: {exc}", hint=INSTALL_HINT) from exc
            finally:
                os.close(ready_w)
                os.close(exit_r)
        finally:
            os.close(ns_fd)
        self._errors = bytearray()
        self._drain = threading.Thread(target=self._read_errors, daemon=True)
        self._drain.start()
        try:
            self._wait_ready(ready_r)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(ready_r)

    def _read_errors(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._errors += line
            del self._errors[:-4096]

    def _wait_ready(self, ready_fd: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError("slirp4netns did not set up the network in time", hint=INSTALL_HINT)
            readable, _, _ = select.select([ready_fd], [], [], left)
            if readable:
                break
        if os.read(ready_fd, 1) != b"1":
            self.process.wait()
            self._drain.join(timeout=5)
            detail = self._errors.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
            raise SandboxError(f"slirp4netns could not set up the network: {detail[0]}", hint=INSTALL_HINT)

    def close(self) -> None:
        if self._exit_w is not None:
            os.close(self._exit_w)  # EOF on --exit-fd: slirp4netns exits
            self._exit_w = None
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._drain.join(timeout=5)
