"""Issue 15: what a rootless build cannot do says so, naming what is missing and what to do; a
killed rootless build leaves nothing behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rootless.rootless_support import User, mounts_naming, oci_archive_layers, processes_of


def _context(directory: Path, buildfile: str, **files: str) -> Path:
    for name, text in {"Buildfile": buildfile, **files}.items():
        (directory / name).write_text(text)
        os.chmod(directory / name, 0o644)
    return directory


def _stderr(done: subprocess.CompletedProcess) -> str:
    return done.stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def root_only_tar(users, busybox_rootfs: Path) -> Path:
    """The busybox rootfs with every entry owned by 0:0 (home/app too)."""
    path = users.base / "busybox-root-only.tar"
    subprocess.run(["tar", "--sort=name", "--numeric-owner", "--owner=0", "--group=0", "-C", str(busybox_rootfs),
                    "-cf", str(path), "."], check=True)
    os.chmod(path, 0o644)
    return path


def test_without_subordinate_ids_an_image_owned_by_uid_1000_is_refused_by_name(users, shared_busybox_tar):
    user: User = users.without_subids
    home = user.own_dir("home")
    done = user.builder("import", str(shared_busybox_tar), "busybox:local", home=home, check=False)
    err = _stderr(done)
    assert done.returncode == 1 and "Traceback" not in err
    assert err.startswith("error: layer entry 'home/app' must be owned by uid 1000, which does not exist in the "
                          "builder's user namespace (it maps uids 0)"), err
    assert f"{user.name} has no subordinate uids" in err and "usermod --add-subuids" in err
    assert "busybox:local" not in user.builder("images", home=home).stdout.decode()


def test_without_subordinate_ids_a_build_that_needs_only_root_succeeds(users, root_only_tar):
    user: User = users.without_subids
    home = user.own_dir("home")
    user.builder("import", str(root_only_tar), "busybox:local", home=home)
    _context(home, "FROM busybox:local\nRUN echo made > /made && id -u > /id && rm /etc/group\nCOPY f /f\n",
             f="file\n")
    user.builder("build", "--network", "none", "-o", f"type=oci,dest={home / 'out.tar'}", ".", home=home)
    run_layer, copy_layer = oci_archive_layers(home / "out.tar")[-2:]
    assert (run_layer["made"].uid, run_layer["made"].gid) == (0, 0)
    assert "etc/.wh.group" in run_layer and (copy_layer["f"].uid, copy_layer["f"].gid) == (0, 0)


@pytest.mark.parametrize("buildfile, expected", [
    ("COPY --chown=1000:1000 f /f\n",
     "Buildfile:2:1: /f must be owned by uid 1000, which does not exist in the builder's user namespace"),
    ("USER 1000\nRUN true\n",
     "Buildfile:3:1: running as user '1000' needs uid 1000, which does not exist in the builder's user namespace"),
    ("RUN --mount=type=secret,id=s,uid=1000 true\n",
     "Buildfile:2:1: the secret mounted at /run/secrets/s must be owned by uid 1000"),
    ("RUN echo x > /x && chown 1000 /x\n",
     "Buildfile:2:1: RUN failed with exit code 1"),
], ids=["copy-chown", "user", "secret-owner", "chown-in-run"])
def test_without_subordinate_ids_a_build_that_needs_uid_1000_fails_clearly(users, root_only_tar, buildfile, expected):
    user: User = users.without_subids
    home = user.own_dir("home")
    user.builder("import", str(root_only_tar), "busybox:local", home=home)
    _context(home, "FROM busybox:local\n" + buildfile, f="file\n", s="secret\n")
    done = user.builder("build", "--progress", "quiet", "--network", "none", "--secret", "id=s,src=s", ".",
                        home=home, check=False)
    err = _stderr(done)
    assert done.returncode == 1 and "Traceback" not in err
    assert err.startswith(expected), err
    # Each says what to do: a subordinate range for this user.
    assert f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user.name}" in err, err


def test_user_namespaces_disabled_is_named_with_the_setting_to_change(users, tmp_path):
    """Run as the user inside a namespace whose user.max_user_namespaces is 0, so that no
    namespace can be made below it (the host's own setting stays as it is)."""
    user: User = users.without_subids
    home = user.own_dir("home")
    helper = tmp_path / "no_userns.py"
    helper.write_text(NO_USERNS_HELPER)
    argv = user.command(user.builder_argv("images"), home=home)
    env_arguments = argv[argv.index("-i"):]  # what follows `env`: the helper switches users itself
    done = subprocess.run([sys.executable, str(helper), str(user.uid), str(user.gid), *env_arguments],
                          cwd=home, capture_output=True, timeout=120)
    err = _stderr(done)
    assert done.returncode == 1, err
    assert err.startswith("error: cannot build as an ordinary user: user namespaces are disabled here"), err
    assert "sysctl -w user.max_user_namespaces=15000" in err


# Makes a user namespace (ids 0-65535 map to themselves) whose max_user_namespaces is 0, then
# runs argv there as uid:gid.
NO_USERNS_HELPER = """
import ctypes, os, sys
uid, gid, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
libc = ctypes.CDLL(None, use_errno=True)
go_r, go_w = os.pipe()
ready_r, ready_w = os.pipe()
pid = os.fork()
if pid == 0:
    if libc.unshare(0x10000000) != 0:
        os._exit(90)
    os.write(ready_w, b"x")
    os.read(go_r, 1)
    with open("/proc/sys/user/max_user_namespaces", "w") as handle:
        handle.write("0")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    os.execvp("env", ["env", *argv])
os.read(ready_r, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as handle:
        handle.write("0 0 65536\\n")
os.write(go_w, b"x")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_the_default_network_without_a_usable_tun_device_says_what_to_do(users, shared_busybox_tar):
    user: User = users.with_subids
    home = user.own_dir("home")
    user.builder("import", str(shared_busybox_tar), "busybox:local", home=home)
    _context(home, "FROM busybox:local\nRUN true\n")
    # A 0600 node for the device, as some machines keep /dev/net/tun.
    private = user.base / f"tun-0600-{home.name}"
    os.mknod(private, 0o020600, os.makedev(10, 200))
    os.chmod(private, 0o600)
    done = user.builder("build", ".", home=home, check=False, setup=f"mount --bind {private} /dev/net/tun")
    err = _stderr(done)
    assert done.returncode == 1 and "Traceback" not in err
    assert "RUN's default network needs /dev/net/tun, which this user cannot open" in err, err
    assert "chmod 0666 /dev/net/tun" in err and "--network=host" in err
    # With the device usable, the default network (slirp4netns) works rootless.
    _context(home, "FROM busybox:local\nRUN ip -4 addr show tap0 | grep -o 'inet [0-9./]*'\n")
    done = user.builder("build", "--progress", "plain", ".", home=home, tun=True)
    assert "inet 10.0.2.100/24" in _stderr(done)


def test_overlay_refused_by_the_kernel_is_an_error_and_auto_falls_back_to_copy(users, shared_busybox_tar):
    """The store on an overlayfs: no overlay can take its upper dir there, rootless or not."""
    user: User = users.with_subids
    home = user.own_dir("home")
    layers = {name: home / name for name in ("lower", "upper", "work", "merged")}
    for path in layers.values():
        path.mkdir()
    os.chown(layers["upper"], user.uid, user.gid)
    setup = (f"mount -t overlay overlay -o lowerdir={layers['lower']},upperdir={layers['upper']},"
             f"workdir={layers['work']} {layers['merged']}")
    store = str(layers["merged"] / "store")
    user.builder("--root", store, "import", str(shared_busybox_tar), "busybox:local", home=home, setup=setup)
    _context(home, "FROM busybox:local\nRUN echo ok > /ok\n")
    done = user.builder("--root", store, "build", "--network", "none", "--snapshotter", "overlay", ".",
                        home=home, setup=setup, check=False)
    err = _stderr(done)
    assert done.returncode == 1 and "Traceback" not in err
    assert "--snapshotter=overlay: overlayfs cannot be mounted over" in err and "in the builder's user namespace" in err
    assert "use --snapshotter=copy" in err
    user.builder("--root", store, "build", "--network", "none", ".", home=home, setup=setup)


def test_a_killed_rootless_build_leaves_no_process_no_mount_and_a_valid_store(users, shared_busybox_tar):
    user: User = users.with_subids
    home = user.own_dir("home")
    user.builder("import", str(shared_busybox_tar), "busybox:local", home=home)
    _context(home, "FROM busybox:local\nRUN touch /started && sleep 300\n")
    argv = user.command(user.builder_argv("build", "--network", "none", "."), home=home)
    build = subprocess.Popen(argv, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (sleeping := [line for line in processes_of(user) if line.split()[1:2] == ["sleep"]]):
            assert time.monotonic() < deadline and build.poll() is None, "the RUN step never started"
            time.sleep(0.1)
        own_mounts = Path(f"/proc/{sleeping[0].split()[0]}/mountinfo").read_text()
        assert " - overlay " in own_mounts, "the RUN step runs on an overlay, in its own mount namespace"
        builder = [line for line in processes_of(user) if "builder.cli build" in line]
        assert len(builder) == 1, builder
        os.kill(int(builder[0].split()[0]), signal.SIGKILL)
        build.wait(timeout=30)
        deadline = time.monotonic() + 30
        while processes_of(user):
            assert time.monotonic() < deadline, processes_of(user)
            time.sleep(0.1)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert mounts_naming(str(home)) == []
    checked = user.builder("fsck", home=home)
    assert checked.stdout.decode() == f"store {home / 'xdg/builder'} is valid\n"
    # And the store goes on working.
    _context(home, "FROM busybox:local\nRUN echo again > /again\n")
    user.builder("build", "--network", "none", ".", home=home)


def test_a_store_of_someone_else_is_refused_in_words_that_hold_outside_the_namespace(users):
    user: User = users.with_subids
    home = user.own_dir("home")
    foreign = home / "foreign-store"
    foreign.mkdir(mode=0o755)  # root's, and open to read: the builder must still refuse it
    done = user.builder("--root", str(foreign), "images", home=home, check=False)
    err = _stderr(done)
    assert done.returncode == 1 and "Traceback" not in err
    assert err.startswith(f"error: the store root {foreign} belongs to another user (uid 65534 here: an id outside "
                          "the builder's user namespace), not to you"), err
