"""The diff of a RUN, for both snapshotters: the expected overlay-upper entries, and the two
snapshotters giving identical layer dirs (type, mode, owner, size, content, link target,
xattrs, hardlink groups, and mtimes of entries that were only copied up)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder.userns import opaque_xattr
from sandbox.helpers import listing, make_layer

OLD_MTIME = 1600000000


@pytest.fixture(scope="session")
def data_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "layer"
    make_layer(root, {
        "data": None,
        "data/keep.txt": "keep\n",
        "data/mode.txt": "mode\n",
        "data/sp ace": "space\n",
        "data/sub": None,
        "data/sub/inner.txt": "inner\n",
        "data/sub/deep": None,
        "data/sub/deep/f": "deep\n",
        "data/link": ("link", "keep.txt"),
        "data/filedir": "was a file\n",
        "data/dirfile": None,
        "data/dirfile/x": "x\n",
        "data/xattr.txt": "with xattr\n",
        "data/hl1": "linked\n",
        "data/hl2": ("hardlink", "data/hl1"),
    }, mtime=OLD_MTIME)
    os.setxattr(root / "data/xattr.txt", "user.note", b"hello")
    os.utime(root / "data", ns=(OLD_MTIME * 10**9, OLD_MTIME * 10**9))
    return root


def run_both(runner, layers, script, **kwargs):
    results = {kind: runner(layers, script, kind, **kwargs) for kind in ("overlay", "copy")}
    for kind, result in results.items():
        assert result.status == 0, (kind, result.output)
    overlay = listing(results["overlay"].diff, since_ns=results["overlay"].started_ns)
    copy = listing(results["copy"].diff, since_ns=results["copy"].started_ns)
    assert overlay == copy
    return results["overlay"].diff, results["copy"].diff


def entry(layer: Path, rel: str) -> os.stat_result:
    return os.lstat(layer / rel)


def names(layer: Path) -> set[str]:
    found = set()
    for root, dirnames, filenames in os.walk(layer):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(root, name), layer))
    return found


def test_rm_of_a_lower_file_is_a_whiteout(runner, busybox_layer, data_layer):
    for diff in run_both(runner, [busybox_layer, data_layer], "rm /data/keep.txt /data/mode.txt"):
        st = entry(diff, "data/keep.txt")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        assert stat.S_IMODE(st.st_mode) == 0 and (st.st_uid, st.st_gid) == (0, 0)
        assert names(diff) == {"data", "data/keep.txt", "data/mode.txt"}
        assert entry(diff, "data").st_mtime_ns > OLD_MTIME * 10**9
        # Overlay links its whiteouts to one shared inode; a layer dir has one inode each.
        assert st.st_nlink == 1 and entry(diff, "data/mode.txt").st_ino != st.st_ino


def test_dir_deleted_and_recreated_is_opaque(runner, busybox_layer, data_layer):
    script = "rm -rf /data/sub && mkdir /data/sub && touch /data/sub/x"
    for diff in run_both(runner, [busybox_layer, data_layer], script):
        assert os.getxattr(diff / "data/sub", opaque_xattr()) == b"y"
        assert names(diff) == {"data", "data/sub", "data/sub/x"}


def test_new_dir_where_nothing_was_is_not_opaque(runner, busybox_layer, data_layer):
    for diff in run_both(runner, [busybox_layer, data_layer], "mkdir -p /data/fresh/a && touch /data/fresh/a/f"):
        assert opaque_xattr() not in os.listxattr(diff / "data/fresh")
        assert names(diff) == {"data", "data/fresh", "data/fresh/a", "data/fresh/a/f"}


def test_chmod_only_copies_up_with_old_mtime(runner, busybox_layer, data_layer):
    for diff in run_both(runner, [busybox_layer, data_layer], "chmod 600 /data/mode.txt"):
        st = entry(diff, "data/mode.txt")
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert (diff / "data/mode.txt").read_text() == "mode\n"
        assert st.st_mtime_ns == OLD_MTIME * 10**9
        # The parent is copied up unchanged, keeping its time too.
        assert entry(diff, "data").st_mtime_ns == OLD_MTIME * 10**9
        assert names(diff) == {"data", "data/mode.txt"}


def test_deep_change_brings_parents_with_their_metadata(runner, busybox_layer, data_layer):
    for diff in run_both(runner, [busybox_layer, data_layer], "echo more >> /data/sub/deep/f"):
        assert (diff / "data/sub/deep/f").read_text() == "deep\nmore\n"
        for parent in ("data", "data/sub", "data/sub/deep"):
            assert entry(diff, parent).st_mtime_ns == OLD_MTIME * 10**9
        assert names(diff) == {"data", "data/sub", "data/sub/deep", "data/sub/deep/f"}


def test_hardlinks_across_dirs(runner, busybox_layer, data_layer):
    script = "mkdir /h1 /h2 && echo hi > /h1/a && ln /h1/a /h2/b && ln /data/keep.txt /h2/k"
    for diff in run_both(runner, [busybox_layer, data_layer], script):
        assert entry(diff, "h1/a").st_ino == entry(diff, "h2/b").st_ino
        assert entry(diff, "h2/k").st_ino == entry(diff, "data/keep.txt").st_ino
        assert (diff / "h2/k").read_text() == "keep\n"


def test_write_to_a_lower_hardlink_breaks_it_like_overlay(runner, busybox_layer, data_layer):
    for diff in run_both(runner, [busybox_layer, data_layer], "echo new > /data/hl1 && cat /data/hl2"):
        assert (diff / "data/hl1").read_text() == "new\n"
        assert not (diff / "data/hl2").exists()


def test_symlinks(runner, busybox_layer, data_layer):
    script = "ln -s /data/keep.txt /l1 && ln -s ../nowhere /data/rel && ln -sfn mode.txt /data/link"
    for diff in run_both(runner, [busybox_layer, data_layer], script):
        assert os.readlink(diff / "l1") == "/data/keep.txt"
        assert os.readlink(diff / "data/rel") == "../nowhere"
        assert os.readlink(diff / "data/link") == "mode.txt"


def test_names_with_spaces_and_newlines(runner, busybox_layer, data_layer):
    script = "touch '/data/a b' && touch \"$(printf '/data/new\\nline')\" && rm '/data/sp ace'"
    for diff in run_both(runner, [busybox_layer, data_layer], script):
        assert (diff / "data/a b").is_file()
        assert (diff / "data/new\nline").is_file()
        assert stat.S_ISCHR(entry(diff, "data/sp ace").st_mode)


def test_type_changes(runner, busybox_layer, data_layer):
    script = "rm /data/filedir && mkdir /data/filedir && rm -r /data/dirfile && echo f > /data/dirfile"
    for diff in run_both(runner, [busybox_layer, data_layer], script):
        assert os.getxattr(diff / "data/filedir", opaque_xattr()) == b"y"
        assert (diff / "data/dirfile").read_text() == "f\n"


def test_xattrs_survive_copy_up(runner, busybox_layer, data_layer):
    for diff in run_both(runner, [busybox_layer, data_layer], "chmod 640 /data/xattr.txt"):
        assert os.getxattr(diff / "data/xattr.txt", "user.note") == b"hello"
        assert not [n for n in os.listxattr(diff / "data/xattr.txt") if n.startswith("trusted.overlay")]


def test_injected_files_never_in_the_diff(runner, busybox_layer, data_layer):
    script = "cat /etc/hosts /etc/resolv.conf /etc/hostname >/dev/null && ls /proc /sys /dev >/dev/null"
    for diff in run_both(runner, [busybox_layer, data_layer], script):
        assert names(diff) == set()


def test_missing_runtime_mount_points_stay_and_injected_files_go(runner, tmp_path, busybox_layer):
    # An image without /etc, /proc, /dev, /sys: as under BuildKit (runc makes the mount points,
    # its stub cleaner takes only /etc/hosts and /etc/resolv.conf away, with the /etc made for
    # them), the layer keeps /proc, /dev and /sys as empty root-owned 0755 dirs, and no /etc.
    bare = make_layer(tmp_path / "bare", {"bin": None})
    os.link(busybox_layer / "bin/busybox", bare / "bin/busybox")
    os.symlink("busybox", bare / "bin/sh")
    for kind in ("overlay", "copy"):
        result = runner([bare], "/bin/busybox echo hi > /out", kind)
        assert result.status == 0, result.output
        assert names(result.diff) == {"out", "dev", "proc", "sys"}, kind
        for name in ("dev", "proc", "sys"):
            st = entry(result.diff, name)
            assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755, (kind, name)
            assert (st.st_uid, st.st_gid) == (0, 0)


def test_command_writing_next_to_injected_files_keeps_its_change(runner, busybox_layer, data_layer):
    for diff in run_both(runner, [busybox_layer, data_layer], "echo x > /etc/motd"):
        assert names(diff) == {"etc", "etc/motd"}


def test_workdir_is_created_and_owned_by_the_user(runner, busybox_layer, data_layer):
    for diff in run_both(runner, [busybox_layer, data_layer], "pwd > /tmp/pwd", workdir="/srv/app",
                         user="app"):
        assert entry(diff, "srv/app").st_uid == 1000
        assert (diff / "tmp/pwd").read_text() == "/srv/app\n"


def test_unchanged_run_gives_an_empty_diff(runner, busybox_layer, data_layer):
    for diff in run_both(runner, [busybox_layer, data_layer], "true"):
        assert names(diff) == set()


def test_lower_whiteouts_and_opaque_dirs_are_respected(runner, tmp_path, busybox_layer, data_layer):
    top = make_layer(tmp_path / "top", {"data": None, "data/keep.txt": "WHITEOUT", "data/sub": "OPAQUE",
                                        "data/sub/only": "only\n"})
    script = "test ! -e /data/keep.txt && ls /data/sub > /listing && rm /data/sub/only"
    for diff in run_both(runner, [busybox_layer, data_layer, top], script):
        assert (diff / "listing").read_text() == "only\n"
        assert stat.S_ISCHR(entry(diff, "data/sub/only").st_mode)


def test_diff_without_a_run_is_empty(tmp_path, busybox_layer, data_layer):
    from builder.snapshot import prepare

    for kind in ("overlay", "copy"):
        snap = prepare([busybox_layer, data_layer], tmp_path / f"w-{kind}", kind)
        try:
            snap.diff(tmp_path / f"d-{kind}")
        finally:
            snap.cleanup()
        assert names(tmp_path / f"d-{kind}") == set()


def test_diff_to_another_file_system(tmp_path, busybox_layer, data_layer):
    """The diff can be written across file systems (here tmpfs) with the same result."""
    import shutil
    import tempfile

    from builder.sandbox import run
    from builder.snapshot import prepare

    script = ("rm -rf /data/sub && mkdir /data/sub && echo a > /data/sub/a && ln /data/sub/a /data/sub/b"
              " && rm /data/keep.txt && chmod 600 /data/mode.txt")
    other = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        results = {}
        for kind in ("overlay", "copy"):
            snap = prepare([busybox_layer, data_layer], tmp_path / f"w-{kind}", kind)
            try:
                assert run(snap, ["/bin/sh", "-c", script], env={}, workdir="/", user=None,
                           on_output=lambda b: None) == 0
                snap.diff(other / kind)
                results[kind] = listing(other / kind, since_ns=snap.started_ns)
            finally:
                snap.cleanup()
        assert results["overlay"] == results["copy"]
        assert os.getxattr(other / "overlay/data/sub", opaque_xattr()) == b"y"
        assert os.lstat(other / "copy/data/sub/a").st_ino == os.lstat(other / "copy/data/sub/b").st_ino
    finally:
        shutil.rmtree(other)


@pytest.mark.parametrize("script", [
    "mv /data/sub /data/moved",                       # overlay: EXDEV, mv copies; copy: a rename
    "mv /data/keep.txt /data/renamed.txt",
    "sed -i s/keep/kept/ /data/keep.txt",             # a new file renamed over the old one
    "rm -rf /data && mkdir -p /data/sub && echo n > /data/sub/n",
    "touch -d '2001-01-01 00:00:00' /data/sub/inner.txt && chown 1000:1000 /data/sub/deep",
    "echo tmp > /data/t && rm /data/t",               # the dir changed, nothing in it did
    "cp -a /data/sub /copied && mkfifo /data/fifo",
])
def test_more_commands_give_identical_layers(runner, busybox_layer, data_layer, script):
    run_both(runner, [busybox_layer, data_layer], script)
