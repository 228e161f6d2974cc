"""Issue 15: an ordinary user builds, and gets byte for byte the image root gets.

Each test makes its contexts and stores in dirs the user owns and runs the real CLI as that user
(see rootless_support.py); root's builds for comparison run the same CLI as root.
"""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from rootless.rootless_support import REPO, User, oci_archive_layers

EPOCH = "1700000000"

# Everything a layer can carry that depends on who builds: owners other than root (COPY
# --chown, USER, chown in RUN), whiteouts, an opaque dir, a setuid file, hard and symbolic
# links, and RUN's four kinds of --mount.
FULL_BUILDFILE = """\
FROM busybox:local AS base

FROM base AS build
RUN mkdir -p /out && echo built > /out/artifact && ln /out/artifact /out/hardlink && chmod 4755 /out/artifact

FROM base
COPY --chown=1000:1000 data.txt /home/app/data.txt
COPY --from=build /out /opt/out
USER app
RUN echo "made by app" > /home/app/mine && mkdir /tmp/appdir
USER root
RUN --mount=type=cache,target=/cache --mount=type=secret,id=token,required=true \\
    --mount=type=bind,source=data.txt,target=/mnt/data.txt --mount=type=tmpfs,target=/scratch \\
    test "$(cat /run/secrets/token)" = s3cret && cp /mnt/data.txt /copied && echo x >> /cache/count \\
    && echo t > /scratch/t && rm /etc/group && rm -rf /home && mkdir -p /home/app \\
    && echo v > /home/app/v && chown -R 1000:50 /home/app && ln -s /home/app/v /vlink
"""


def _write(directory: Path, files: dict[str, str], owner: User | None = None) -> Path:
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        os.chmod(path, 0o644)
        if owner is not None:
            os.chown(path, owner.uid, owner.gid)
    return directory


def _root_builder(store: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "builder.cli", "--root", str(store), *args], cwd=cwd,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-4000:]
    return done


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def user(users) -> User:
    return users.with_subids


@pytest.fixture
def home(user: User) -> Path:
    return user.own_dir("home")


@pytest.fixture
def with_busybox(user: User, home: Path, shared_busybox_tar: Path) -> Path:
    user.builder("import", str(shared_busybox_tar), "busybox:local", home=home)
    return home


@pytest.mark.parametrize("snapshotter", ["overlay", "copy"])
def test_a_rootless_layer_keeps_owners_whiteouts_and_opaque_dirs(user, with_busybox, snapshotter):
    home = with_busybox
    context = _write(home, {"Buildfile": (
        "FROM busybox:local\n"
        "RUN echo owned > /owned && chown 1000:1000 /owned && rm /etc/group"
        " && rm -rf /home && mkdir /home && echo new > /home/new && cat /proc/self/uid_map\n")})
    out = home / "image.tar"
    built = user.builder("build", "--progress", "plain", "--network", "none", "--snapshotter", snapshotter,
                         "-o", f"type=oci,dest={out}", str(context), home=home)
    # RUN ran as root of a namespace that maps the user's 65536 subordinate ids from 1 on.
    assert "1" in built.stderr.decode().split() and "65536" in built.stderr.decode().split()
    base, layer = oci_archive_layers(out)
    assert (base["home/app"].uid, base["home/app"].gid) == (1000, 1000)  # the base's own owner, kept
    assert (layer["owned"].uid, layer["owned"].gid) == (1000, 1000)
    assert layer["etc/.wh.group"].isreg() and layer["etc/.wh.group"].size == 0  # rm of a base file
    assert "home/.wh..wh..opq" in layer  # a replaced directory hides the base's
    assert layer["home/new"].isreg() and "home/app" not in layer
    assert sorted(layer) == sorted(["etc", "etc/.wh.group", "home", "home/.wh..wh..opq", "home/new", "owned"])


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_root_and_an_ordinary_user_build_the_same_image(user, with_busybox, shared_busybox_tar, tmp_path,
                                                        compression):
    files = {"Buildfile": FULL_BUILDFILE, "data.txt": "some data\n", "token": "s3cret"}
    common = ["build", "--progress", "plain", "--network", "none", "--source-date-epoch", EPOCH,
              "--compression", compression, "--secret", "id=token,src=token"]

    root_context = _write(tmp_path, dict(files))
    root_store = tmp_path / "store"
    _root_builder(root_store, "import", str(shared_busybox_tar), "busybox:local", cwd=root_context)
    _root_builder(root_store, *common, "-o", f"type=oci,dest={tmp_path / 'root.tar'}", ".", cwd=root_context)

    home = with_busybox
    _write(home, files, owner=user)
    user.builder(*common, "-o", f"type=oci,dest={home / 'user.tar'}", ".", home=home)
    # Once more with the other snapshotter, so both rootless paths are held to the same bytes.
    user.builder(*common, "--no-cache", "--snapshotter", "copy", "-o", f"type=oci,dest={home / 'copy.tar'}", ".",
                 home=home)

    root_layers = oci_archive_layers(tmp_path / "root.tar")
    top = root_layers[-1]
    assert (top["home/app/v"].uid, top["home/app/v"].gid) == (1000, 50) and "home/.wh..wh..opq" in top
    assert _sha256(home / "user.tar") == _sha256(tmp_path / "root.tar")
    assert _sha256(home / "copy.tar") == _sha256(tmp_path / "root.tar")


def test_devices_xattrs_and_file_capabilities_survive_a_rootless_store(user, with_busybox, shared_busybox_tar,
                                                                       tmp_path):
    """A base layer's device nodes (which no one may make in a user namespace), security.capability
    (namespaced by the kernel there) and user.* xattrs come back out of a rootless store exactly
    as they went in."""
    # A v2 file capability (cap_net_raw+ep), as `setcap` writes it as root.
    capability = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")
    home = with_busybox
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "dev").mkdir()
    (rootfs / "bin/ping").write_bytes(b"not really ping\n")
    os.setxattr(rootfs / "bin/ping", "security.capability", capability)
    os.setxattr(rootfs / "bin/ping", "user.note", b"kept")
    os.mknod(rootfs / "dev/console", stat.S_IFCHR | 0o620, os.makedev(5, 1))
    os.chown(rootfs / "dev/console", 0, 5)
    os.chmod(rootfs / "dev/console", 0o620)  # not what the umask left
    os.mknod(rootfs / "dev/loop0", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    for path in (rootfs / "bin/ping", rootfs / "dev/console", rootfs / "dev/loop0", rootfs / "bin", rootfs / "dev",
                 rootfs):
        os.utime(path, (1577836800, 1577836800), follow_symlinks=False)
    tar_path = user.base / f"caps-{home.name}.tar"
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "--sort=name", "--format=posix",
                    "-C", str(rootfs), "-cf", str(tar_path), "bin", "dev"], check=True)
    os.chmod(tar_path, 0o644)

    store = tmp_path / "root-store"
    _root_builder(store, "import", str(tar_path), "caps:1", cwd=tmp_path)
    _root_builder(store, "save", "-o", str(tmp_path / "root.tar"), "caps:1", cwd=tmp_path)
    user.builder("import", str(tar_path), "caps:1", home=home)
    user.builder("save", "-o", str(home / "user.tar"), "caps:1", home=home)
    assert _sha256(home / "user.tar") == _sha256(tmp_path / "root.tar")
    with tarfile.open(home / "user.tar") as archive:
        layer_name = next(name for name in archive.getnames() if name.endswith(".tar") and "/" in name)
        with tarfile.open(fileobj=archive.extractfile(layer_name)) as layer:
            ping, console, loop = (layer.getmember(name) for name in ("bin/ping", "dev/console", "dev/loop0"))
    assert ping.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == capability
    assert ping.pax_headers["SCHILY.xattr.user.note"] == "kept"
    assert (console.ischr(), console.devmajor, console.devminor, console.mode, console.gid) == (True, 5, 1, 0o620, 5)
    assert (loop.isblk(), loop.devmajor, loop.devminor) == (True, 7, 0)
    assert not any(key.startswith("SCHILY.xattr.user.builder") for key in console.pax_headers)
    # Copied into a build, under a RUN, they are the same too. (RUN sees an empty file where the
    # image has a node: it could not open the node in the sandbox anyway.)
    buildfile = {"Buildfile": "FROM busybox:local\nCOPY --from=caps:1 /dev /caps-dev\n"
                              "RUN test -e /caps-dev/console && echo present > /seen\n"}
    build = ["build", "--network", "none", "--source-date-epoch", EPOCH]
    _root_builder(store, "import", str(shared_busybox_tar), "busybox:local", cwd=tmp_path)
    _root_builder(store, *build, "-o", f"type=oci,dest={tmp_path / 'root-copy.tar'}", str(_write(tmp_path, buildfile)),
                  cwd=tmp_path)
    user.builder(*build, "-o", f"type=oci,dest={home / 'user-copy.tar'}", str(_write(home, buildfile, owner=user)),
                 home=home)
    assert _sha256(home / "user-copy.tar") == _sha256(tmp_path / "root-copy.tar")
    copied = oci_archive_layers(home / "user-copy.tar")[-2]
    assert copied["caps-dev/console"].ischr() and copied["caps-dev/loop0"].isblk()
