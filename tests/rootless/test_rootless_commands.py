"""Issue 15: the examples and every command work for an ordinary user; the sandbox keeps each of
its hardenings when RUN's root is the user's mapped root."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from registry.registry_helpers import REGISTRY_BIN, RegistryServer

from rootless.rootless_support import User

BUILDFILE = """\
FROM busybox:local
USER app
RUN echo "made by app" > /home/app/mine
USER root
RUN echo owned > /owned && chown 1000:50 /owned
CMD ["cat", "/home/app/mine"]
"""


@pytest.fixture
def user(users) -> User:
    return users.with_subids


def _out(done: subprocess.CompletedProcess) -> str:
    return done.stdout.decode(errors="replace")


def test_the_examples_build_and_run_as_an_ordinary_user(user):
    home = user.own_dir("home")
    examples = user.code / "examples"
    # hello: FROM scratch, exported into a dir of the user's, where the files are theirs.
    out = home / "hello-rootfs"
    user.builder("build", "-t", "hello", "-o", f"type=local,dest={out}", str(examples / "hello"), home=home)
    assert (out / "app/hello.txt").read_text() == "hello from a FROM scratch image\n"
    assert os.lstat(out / "app/hello.txt").st_uid == user.uid and not (out / "app/notes.tmp").exists()
    # busybox: the base made by the example's script as the user, then its README's commands.
    rootfs_tar = home / "busybox-rootfs.tar"
    made = user.run(["sh", str(examples / "busybox/make-rootfs.sh"), str(rootfs_tar)], home=home)
    assert made.returncode == 0, made.stderr.decode()
    user.builder("import", str(rootfs_tar), "busybox:local", home=home)
    user.builder("build", "-t", "busybox-example", str(examples / "busybox"), home=home, tun=True)
    ran = user.builder("run", "--rm", "busybox-example", home=home, tun=True)
    assert _out(ran) == "hello from busybox (version 1.0, running as greeter)\n"


@pytest.mark.slow
def test_the_debian_python_example_installs_with_apt_as_an_ordinary_user(user):
    """apt (which drops to its _apt user) in RUN, over the default network: what subordinate
    ids and slirp4netns make possible without root. mmdebstrap makes the base rootless too."""
    assert shutil.which("mmdebstrap"), ".ci/run installs mmdebstrap"
    home = user.own_dir("home")
    examples = user.code / "examples"
    rootfs_tar = home / "debian-rootfs.tar"
    made = user.run(["sh", str(examples / "debian-python/make-rootfs.sh"), str(rootfs_tar)], home=home, timeout=900)
    assert made.returncode == 0, made.stderr.decode()[-3000:]
    user.builder("import", str(rootfs_tar), "debian:bookworm-local", home=home)
    built = user.builder("build", "--progress", "plain", "-t", "greeting-app", str(examples / "debian-python"),
                         home=home, tun=True, timeout=900)
    assert "app tests passed" in built.stderr.decode()
    ran = user.builder("run", "--rm", "greeting-app", home=home, tun=True)
    assert re.fullmatch(r"hello, builder, from Python 3\.\d+ on Debian\n", _out(ran)), _out(ran)
    assert _out(user.builder("run", "--rm", "greeting-app", "id", "-un", home=home, tun=True)) == "nobody\n"


def test_every_command_works_for_an_ordinary_user(user, shared_busybox_tar):
    home = user.own_dir("home")
    for name, text in (("Buildfile", BUILDFILE),):
        (home / name).write_text(text)
    # No --root: the store is $XDG_DATA_HOME/builder, the user's own and closed to others.
    user.builder("import", str(shared_busybox_tar), "busybox:local", home=home)
    store = home / "xdg/builder"
    st = os.stat(store)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.uid, 0o700)
    user.builder("build", "--network", "none", "-t", "app:1", ".", home=home)
    assert "app" in _out(user.builder("images", home=home))
    user.builder("tag", "app:1", "app:2", home=home)
    inspected = json.loads(_out(user.builder("inspect", "app:2", home=home)))
    assert inspected[0]["Config"]["Cmd"] == ["cat", "/home/app/mine"]
    assert "chown 1000:50" in _out(user.builder("history", "--no-trunc", "app:1", home=home))
    assert _out(user.builder("run", "--rm", "--network", "none", "app:1", home=home)) == "made by app\n"
    ran = user.builder("run", "--rm", "--network", "host", "--user", "app", "app:1", "id", "-u", home=home)
    assert _out(ran) == "1000\n"
    differ = user.builder("diff", "busybox:local", "app:1", home=home, check=False)
    assert differ.returncode == 1 and "chown 1000:50" in _out(differ)  # 1: they differ, as diff(1) says

    # Exports: archives keep the image's owners; a local dir gets files of the user's own.
    user.builder("save", "-o", str(home / "saved.tar"), "app:1", home=home)
    user.builder("rmi", "app:2", home=home)
    user.builder("load", "-i", str(home / "saved.tar"), home=home)
    for kind in ("oci", "docker", "tar"):
        user.builder("build", "--network", "none", "-o", f"type={kind},dest={home / kind}.tar", ".", home=home)
    with tarfile.open(home / "tar.tar") as flat:
        owned = flat.getmember("owned")
    assert (owned.uid, owned.gid) == (1000, 50)
    user.builder("build", "--network", "none", "-o", f"type=local,dest={home / 'local'}", ".", home=home)
    assert (home / "local/owned").read_text() == "owned\n"
    assert {os.lstat(home / "local" / name).st_uid for name in ("owned", "home/app/mine", "bin/busybox")} == {
        user.uid}

    user.builder("df", home=home)
    user.builder("prune", "--all", home=home)
    assert _out(user.builder("fsck", home=home)) == f"store {store} is valid\n"
    # What the user cannot remove directly (files of subordinate ids), `builder unshare` can.
    assert user.run(["rm", "-rf", str(store)], home=home).returncode != 0
    user.builder("unshare", "rm", "-rf", str(store), home=home)
    assert not store.exists()


@pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="docker-registry is not installed")
def test_push_and_pull_work_for_an_ordinary_user(user, shared_busybox_tar, tmp_path):
    registry = RegistryServer(tmp_path / "registry").start()
    try:
        home = user.own_dir("home")
        (home / "Buildfile").write_text(BUILDFILE)
        user.builder("import", str(shared_busybox_tar), "busybox:local", home=home)
        name = f"{registry.host}/rootless/app:1"
        user.builder("build", "--network", "none", "-t", name, ".", home=home)
        built = json.loads(_out(user.builder("inspect", name, home=home)))[0]["Id"]
        user.builder("push", "--insecure-registry", registry.host, name, home=home)
        user.builder("rmi", name, home=home)
        user.builder("pull", "--insecure-registry", registry.host, name, home=home)
        assert json.loads(_out(user.builder("inspect", name, home=home)))[0]["Id"] == built
        assert _out(user.builder("run", "--rm", "--network", "none", name, home=home)) == "made by app\n"
    finally:
        registry.stop()


SANDBOX_SUITES = ["tests/sandbox", "tests/security/test_sandbox_bind.py", "tests/security/test_sandbox_devices.py",
                  "tests/security/test_sandbox_network.py", "tests/security/test_sandbox_seccomp.py",
                  "tests/security/test_sandbox_secrets.py", "tests/security/test_mount_sources.py"]


@pytest.mark.slow
def test_the_sandbox_and_its_hardening_tests_pass_in_the_users_namespace(user):
    """The sandbox and security tests, run as the user inside the namespace rootless builds use:
    seccomp, capabilities, nodev, masked /proc, read-only /sys, verified binds, in-memory secrets
    and the private network all hold when RUN's root is the user's mapped root."""
    home = user.own_dir("home")
    tests = user.code / "tests"
    for name in ("sandbox", "security", "e2e"):
        shutil.copytree(Path(__file__).parents[1] / name, tests / name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path in [tests, *tests.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o044 | (0o011 if path.is_dir() else 0))
    script = ("import sys; from builder.userns import enter, in_user_namespace; enter(); "
              "assert in_user_namespace(); import pytest; sys.exit(pytest.main(sys.argv[1:]))")
    done = user.run([sys.executable, "-c", script, "-q", "-p", "no:cacheprovider", f"--basetemp={home / 'pt'}",
                     *SANDBOX_SUITES], home=home, cwd=user.code, tun=True, timeout=1200)
    out = _out(done)
    assert done.returncode == 0, out[-6000:] + done.stderr.decode(errors="replace")[-2000:]
    summary = out.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    # None skipped: every one of them ran rootless (they skip only without root).
    assert passed and int(passed.group(1)) >= 140 and "skipped" not in summary, summary
