"""Behaviour of a command inside the sandbox, on both snapshotters."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from builder.errors import SandboxError
from builder.sandbox import DEFAULT_PATH, Bind, run
from builder.snapshot import prepare
from sandbox.helpers import make_layer

KINDS = ("overlay", "copy")


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


def run_in(layers, work: Path, argv, kind="overlay", **kwargs) -> tuple[int, str]:
    snap = prepare(layers, work, kind)
    chunks: list[bytes] = []
    kwargs.setdefault("env", {})
    kwargs.setdefault("workdir", "/")
    kwargs.setdefault("user", None)
    try:
        status = run(snap, argv, on_output=chunks.append, **kwargs)
    finally:
        snap.cleanup()
    return status, b"".join(chunks).decode()


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def test_echo_output_is_captured(busybox_layer, tmp_path, kind):
    status, out = run_in([busybox_layer], tmp_path / "w", sh("echo hello; echo err >&2"), kind)
    assert status == 0
    assert out == "hello\nerr\n"


def test_output_streams_as_it_comes(busybox_layer, tmp_path):
    snap = prepare([busybox_layer], tmp_path / "w", "overlay")
    chunks: list[bytes] = []
    try:
        run(snap, sh("echo one; sleep 0.3; echo two"), env={}, workdir="/", user=None,
            on_output=chunks.append)
    finally:
        snap.cleanup()
    assert chunks[0] == b"one\n"
    assert b"".join(chunks) == b"one\ntwo\n"


def test_env_is_exactly_the_given_env_plus_default_path_and_home(busybox_layer, tmp_path, kind):
    status, out = run_in([busybox_layer], tmp_path / "w", ["/bin/cat", "/proc/self/environ"], kind,
                         env={"A": "1", "B": "two words"})
    assert status == 0
    assert out.split("\0")[:-1] == ["A=1", "B=two words", f"PATH={DEFAULT_PATH}", "HOME=/root"]


def test_image_path_is_kept(busybox_layer, tmp_path):
    status, out = run_in([busybox_layer], tmp_path / "w", ["/bin/sh", "-c", "echo $PATH"],
                         env={"PATH": "/bin"})
    assert out == "/bin\n"


def test_workdir_is_created(busybox_layer, tmp_path, kind):
    status, out = run_in([busybox_layer], tmp_path / "w", ["pwd"], kind, workdir="/some/where")
    assert (status, out) == (0, "/some/where\n")


@pytest.mark.parametrize("user, expected", [
    ("app", ("uid=1000(app)", "gid=1000(app)", {"1000(app)", "50(staff)"})),
    ("1000:50", ("uid=1000(app)", "gid=50(staff)", {"50(staff)"})),
    ("app:staff", ("uid=1000(app)", "gid=50(staff)", {"50(staff)"})),
    ("app:1000", ("uid=1000(app)", "gid=1000(app)", {"1000(app)"})),
    ("4242", ("uid=4242", "gid=0(root)", {"0(root)"})),
    ("4242:4343", ("uid=4242", "gid=4343", {"4343"})),
    (None, ("uid=0(root)", "gid=0(root)", {"0(root)"})),
])
def test_user(busybox_layer, tmp_path, user, expected):
    status, out = run_in([busybox_layer], tmp_path / "w", ["id"], user=user)
    assert status == 0
    uid, gid, groups = out.split()
    assert (uid, gid, set(groups.removeprefix("groups=").split(","))) == expected


def test_user_on_copy_snapshotter(busybox_layer, tmp_path):
    status, out = run_in([busybox_layer], tmp_path / "w", ["id", "-u"], "copy", user="app")
    assert out == "1000\n"


def test_unknown_user_is_an_error(busybox_layer, tmp_path):
    snap = prepare([busybox_layer], tmp_path / "w", "overlay")
    try:
        with pytest.raises(Exception) as caught:
            run(snap, ["id"], env={}, workdir="/", user="nosuchuser", on_output=lambda b: None)
    finally:
        snap.cleanup()
    assert "nosuchuser" in str(caught.value)
    assert caught.value.hint


@pytest.mark.parametrize("script, status", [("exit 7", 7), ("true", 0), ("sh -c 'kill -9 $$'; exit $?", 137)])
def test_exit_status_is_propagated(busybox_layer, tmp_path, script, status):
    assert run_in([busybox_layer], tmp_path / "w", sh(script))[0] == status


def _sandbox_pid1_with(marker: bytes) -> int | None:
    """Host pid of a process whose cmdline holds `marker` and that is pid 1 of its namespace."""
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if marker in cmdline and nspid[-1:] == ["1"]:
            return int(pid)
    return None


def test_pid1_killed_by_a_signal_gives_128_plus_signal(busybox_layer, tmp_path):
    marker = f"31.{os.getpid()}"
    killed = []

    def on_output(chunk: bytes) -> None:
        deadline = time.monotonic() + 5
        while not killed and time.monotonic() < deadline:
            pid = _sandbox_pid1_with(marker.encode())
            if pid is not None:
                os.kill(pid, 9)
                killed.append(pid)
            time.sleep(0.01)

    snap = prepare([busybox_layer], tmp_path / "w", "overlay")
    try:
        status = run(snap, sh(f"echo ready; sleep {marker}"), env={}, workdir="/", user=None,
                     on_output=on_output)
    finally:
        snap.cleanup()
    assert killed
    assert status == 137


def test_proc_shows_only_the_sandbox(busybox_layer, tmp_path, kind):
    status, out = run_in([busybox_layer], tmp_path / "w",
                         sh("echo $(ls /proc | grep -E '^[0-9]+$' | sort -n); "
                            "tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$"), kind)
    pids, cmdline, shell_pid = out.splitlines()
    pids = [int(p) for p in pids.split()]
    assert pids[0] == 1
    assert len(pids) <= 6  # the shell and its pipeline, never the host's processes
    assert cmdline.startswith("/bin/sh -c echo $(ls /proc")
    assert shell_pid == "1"


def test_network_none_has_only_loopback(busybox_layer, tmp_path):
    status, out = run_in([busybox_layer], tmp_path / "w", ["ls", "/sys/class/net"], network="none")
    assert (status, out.split()) == (0, ["lo"])


def test_network_host_sees_host_interfaces(busybox_layer, tmp_path):
    status, out = run_in([busybox_layer], tmp_path / "w", ["ls", "/sys/class/net"], network="host")
    assert sorted(out.split()) == sorted(os.listdir("/sys/class/net"))


def test_hostname(busybox_layer, tmp_path):
    status, out = run_in([busybox_layer], tmp_path / "w", sh("hostname; cat /etc/hostname"),
                         hostname="box")
    assert out == "box\nbox\n"


def test_dev_is_minimal_and_works(busybox_layer, tmp_path):
    status, out = run_in([busybox_layer], tmp_path / "w",
                         sh("echo x > /dev/null && head -c 4 /dev/zero | wc -c && ls /dev && "
                            "touch /dev/shm/f && test -d /dev/pts"))
    assert status == 0, out
    lines = out.split()
    assert lines[0] == "4"
    assert {"null", "zero", "full", "random", "urandom", "pts", "shm"} <= set(lines)
    assert "sda" not in lines and "vda" not in lines


def test_sys_is_read_only(busybox_layer, tmp_path):
    status, out = run_in([busybox_layer], tmp_path / "w", sh("touch /sys/x 2>&1; echo $?"))
    assert out.strip().endswith("1")


@pytest.mark.parametrize("network", ["default", "none", "host"])
def test_sys_and_every_mount_below_it_are_read_only(busybox_layer, tmp_path, network):
    """With the host's network, rootless, no sysfs of its own can be mounted: the host's /sys is
    bound with its submounts (cgroups, ...), which must be read-only too."""
    status, out = run_in([busybox_layer], tmp_path / "w", sh("cat /proc/self/mountinfo"), network=network)
    under_sys = [line.split() for line in out.splitlines()
                 if line.split()[4] == "/sys" or line.split()[4].startswith("/sys/")]
    assert under_sys and all("ro" in fields[5].split(",") for fields in under_sys), out


def test_missing_program_is_a_clear_error(busybox_layer, tmp_path, kind):
    with pytest.raises(SandboxError) as caught:
        run_in([busybox_layer], tmp_path / "w", ["no-such-program", "x"], kind)
    assert "no-such-program" in caught.value.message
    assert "not found" in caught.value.message


def test_missing_shell_is_a_clear_error(tmp_path):
    empty = make_layer(tmp_path / "empty", {"etc": None})
    with pytest.raises(SandboxError) as caught:
        run_in([empty], tmp_path / "w", ["/bin/sh", "-c", "true"])
    assert "/bin/sh" in caught.value.message


def test_scratch_image_with_no_layers(tmp_path):
    with pytest.raises(SandboxError):
        run_in([], tmp_path / "w", ["/bin/sh", "-c", "true"])


def test_extra_binds(busybox_layer, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from host\n")
    snap = prepare([busybox_layer], tmp_path / "w", "overlay")
    chunks: list[bytes] = []
    try:
        status = run(snap, sh("cat /mnt/cache/in.txt; touch /mnt/cache/new 2>/dev/null; echo $?"),
                     env={}, workdir="/", user=None, on_output=chunks.append,
                     extra_binds=[Bind(shared, "/mnt/cache", readonly=True)])
        snap.diff(tmp_path / "diff")
    finally:
        snap.cleanup()
    assert status == 0
    assert b"".join(chunks) == b"from host\n1\n"
    assert not (shared / "new").exists()
    assert not os.listdir(tmp_path / "diff")  # the bind's mount point is not part of the layer


def test_stdin_is_empty_by_default(busybox_layer, tmp_path):
    status, out = run_in([busybox_layer], tmp_path / "w", sh("cat; echo done"))
    assert out == "done\n"


def test_unknown_network_mode(busybox_layer, tmp_path):
    with pytest.raises(SandboxError):
        run_in([busybox_layer], tmp_path / "w", ["true"], network="bridge")


def test_file_bind(busybox_layer, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret\n")
    snap = prepare([busybox_layer], tmp_path / "w", "copy")
    chunks: list[bytes] = []
    try:
        status = run(snap, ["cat", "/run/secrets/token"], env={}, workdir="/", user=None,
                     on_output=chunks.append, extra_binds=[Bind(secret, "/run/secrets/token")])
        snap.diff(tmp_path / "diff")
    finally:
        snap.cleanup()
    assert (status, b"".join(chunks)) == (0, b"s3cret\n")
    assert os.listdir(tmp_path / "diff") == []  # neither the file nor /run made for it


def test_parallel_sandboxes(busybox_layer, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def one(index: int) -> tuple[int, str]:
        return run_in([busybox_layer], tmp_path / f"w{index}", sh(f"sleep 0.2; echo {index}; hostname"),
                      "overlay" if index % 2 else "copy", hostname=f"h{index}")

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert results == [(0, f"{i}\nh{i}\n") for i in range(4)]


def test_umask_is_docker_default_whatever_the_builders(busybox_layer, tmp_path, kind):
    old = os.umask(0o077)
    try:
        status, out = run_in([busybox_layer], tmp_path / "w", sh("umask; touch /tmp/f; stat -c %a /tmp/f"), kind)
    finally:
        os.umask(old)
    assert out.split() == ["0022", "644"]


def test_host_kernel_settings_are_out_of_reach(busybox_layer, tmp_path):
    status, out = run_in([busybox_layer], tmp_path / "w", sh(
        "(echo 1 > /proc/sys/kernel/domainname) 2>/dev/null; echo sysctl=$?; "
        "mount -t tmpfs none /mnt 2>/dev/null; echo mount=$?; "
        "for f in /proc/kcore /proc/timer_list /proc/sched_debug; do test -e $f && cat $f; done; echo; "
        "grep CapBnd /proc/self/status"))
    lines = out.split("\n")
    assert lines[0] == "sysctl=1"
    assert lines[1] != "mount=0"  # no CAP_SYS_ADMIN, as under Docker
    assert lines[2] == ""  # masked: empty if they exist at all
    assert lines[3].split()[1] == "00000000a80425fb"  # Docker's default capability set


def test_large_environment(busybox_layer, tmp_path):
    env = {f"V{i}": "x" * 1000 for i in range(100)}  # ~100 kB: more than one pipe buffer of spec
    status, out = run_in([busybox_layer], tmp_path / "w", sh("env | grep -c '^V'; printf %s \"$V99\" | wc -c"),
                         env=env)
    assert (status, out.split()) == (0, ["100", "1000"])
