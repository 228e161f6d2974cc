"""COPY of a tree with many directories: the files go to the copy threads in per-directory
batches, and new files skip the fchown/fchmod they do not need. Whatever the batching and the
number of threads, the staged tree must hold what the source holds (content, mode, owner, mtime,
xattrs, hard-link groups across dirs, dir metadata)."""
from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

import pytest
from ctxhelpers import tree_listing  # type: ignore[import-not-found]

import builder.solve.copy as copy_module
from builder.context.dockerignore import IgnoreMatcher
from builder.context.tree import BuildContext
from builder.solve.copy import stage_copy

DIRS = 12
FILES_PER_DIR = 70
MTIME = 1_650_000_000


def _make_source(root: Path) -> Path:
    """DIRS dirs of FILES_PER_DIR files with varied modes, a nested level, hard links across dirs,
    an empty file and a couple of larger ones."""
    modes = [0o644, 0o600, 0o755, 0o666, 0o777, 0o4755, 0o2711, 0o1644, 0o444, 0o640]
    for d in range(DIRS):
        folder = root / f"d{d:02d}" / ("deep" if d % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(FILES_PER_DIR):
            path = folder / f"f{f:03d}"
            path.write_bytes(f"{d}/{f}\n".encode() * (f % 5))
            os.chmod(path, modes[(d + f) % len(modes)])
            os.utime(path, ns=(MTIME * 10**9 + f, MTIME * 10**9 + d * 1000 + f))
    (root / "big").mkdir()
    for index in range(3):
        (root / "big" / f"blob{index}").write_bytes(os.urandom(300_000 + index))
    # One content under three names in three dirs, and a pair inside one dir.
    os.link(root / "d01/f005", root / "d07/linked")
    os.link(root / "d01/f005", root / "d11/linked-too")
    os.link(root / "d04/f010", root / "d04/f010-again")
    os.setxattr(root / "d02/f001", "user.note", b"kept")
    for d in range(DIRS):
        os.chmod(root / f"d{d:02d}", 0o750 if d % 2 else 0o755)
        os.utime(root / f"d{d:02d}", ns=(0, (MTIME + d) * 10**9))
    return root


def _copy(context: BuildContext, staging: Path, **options) -> None:
    stage_copy(context, ["."], "/ctx", workdir="/", staging_dir=staging, dest_is_dir=lambda _p: False,
               chown=options.pop("chown", None), chmod=options.pop("chmod", None), **options)


def _times(root: Path) -> dict[str, int]:
    return {
        "/" + str(Path(dirpath, name).relative_to(root)): os.lstat(Path(dirpath, name)).st_mtime_ns
        for dirpath, dirnames, filenames in os.walk(root)
        for name in dirnames + filenames
    }


def _expected(source: Path) -> dict[str, tuple]:
    """What the copy must give, read from the source on its own: context owners become 0:0."""
    found = {}
    for image_path, (kind, mode, _uid, _gid, content) in tree_listing(source).items():
        found["/ctx" + image_path] = (kind, mode, 0, 0, content)
    found["/ctx"] = ("dir", 0o755, 0, 0, None)
    return found


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_many_dirs_copy_like_the_source_with_any_number_of_threads(tmp_path, monkeypatch, workers):
    source = _make_source(tmp_path / "src")
    monkeypatch.setattr(copy_module._ParallelCopies, "WORKERS", workers)
    monkeypatch.setattr(copy_module._ParallelCopies, "BATCH_FILES", 16)  # several batches per dir
    monkeypatch.setattr(copy_module._ParallelCopies, "BATCH_BYTES", 200_000)  # each blob alone
    staging = tmp_path / "staging"
    staging.mkdir()
    copied: list[int] = []
    _copy(BuildContext(source, IgnoreMatcher.empty()), staging, on_copied=copied.append)

    assert tree_listing(staging) == _expected(source)
    want_times = {"/ctx" + path: ns for path, ns in _times(source).items()}
    got_times = _times(staging)
    assert {path: got_times[path] for path in want_times} == want_times
    assert os.getxattr(staging / "ctx/d02/f001", "user.note") == b"kept"
    assert sum(copied) == sum(os.lstat(p).st_size for p in source.rglob("*") if p.is_file())

    groups = {}
    for name in ("d01/f005", "d07/linked", "d11/linked-too", "d04/f010", "d04/f010-again"):
        st = os.lstat(staging / "ctx" / name)
        groups.setdefault(st.st_nlink, set()).add(st.st_ino)
    assert groups == {3: {os.lstat(staging / "ctx/d01/f005").st_ino},
                      2: {os.lstat(staging / "ctx/d04/f010").st_ino}}


def test_owner_is_set_in_a_setgid_dir_even_when_it_is_the_creators(tmp_path):
    """A new file in a setgid dir takes the dir's group: the wanted 0:0 must still be set."""
    root = tmp_path / "rootfs"
    (root / "shared").mkdir(parents=True)
    (root / "shared/file").write_text("x")
    os.chown(root / "shared", 0, 4321)
    os.chmod(root / "shared", 0o2775)
    os.chown(root / "shared/file", os.geteuid(), os.getegid())
    staging = tmp_path / "staging"
    staging.mkdir()
    _copy(BuildContext.for_rootfs(root), staging)
    listing = tree_listing(staging)
    assert listing["/ctx/shared"] == ("dir", 0o2775, 0, 4321, None)
    assert listing["/ctx/shared/file"] == ("file", 0o644, os.geteuid(), os.getegid(), b"x")


def test_modes_the_umask_would_cut_are_set_whole(tmp_path):
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    wanted = {"open": 0o666, "all": 0o777, "group-write": 0o664, "plain": 0o644, "setuid": 0o4755, "sticky": 0o1600}
    for name, mode in wanted.items():
        (source / "d" / name).write_text(name)
        os.chmod(source / "d" / name, mode)
    staging = tmp_path / "staging"
    staging.mkdir()
    old = os.umask(0o027)
    try:
        _copy(BuildContext(source, IgnoreMatcher.empty()), staging)
    finally:
        os.umask(old)
    assert {name: stat.S_IMODE(os.lstat(staging / "ctx/d" / name).st_mode) for name in wanted} == wanted


def _acl(entries: list[tuple[int, int, int]]) -> bytes:
    """The kernel's posix ACL xattr value: version 2, then (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)


USER_OBJ, GROUP_OBJ, OTHER = 0x01, 0x04, 0x20
UNDEFINED_ID = 0xFFFFFFFF


def test_a_default_acl_on_a_copied_dir_does_not_change_the_file_modes(tmp_path):
    """A default ACL replaces the umask for files made below it (and a copied dir can bring one
    along as an xattr), so a mode given at creation would be cut by the ACL: it must be set."""
    source = tmp_path / "src"
    (source / "acl").mkdir(parents=True)
    (source / "acl/file").write_text("x")
    os.chmod(source / "acl/file", 0o644)
    restrictive = _acl([(USER_OBJ, 6, UNDEFINED_ID), (GROUP_OBJ, 0, UNDEFINED_ID), (OTHER, 0, UNDEFINED_ID)])
    try:
        os.setxattr(source / "acl", "system.posix_acl_default", restrictive)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip("no POSIX ACLs on this file system")
        raise
    staging = tmp_path / "staging"
    staging.mkdir()
    _copy(BuildContext(source, IgnoreMatcher.empty()), staging)
    assert os.getxattr(staging / "ctx/acl", "system.posix_acl_default") == restrictive
    assert stat.S_IMODE(os.lstat(staging / "ctx/acl/file").st_mode) == 0o644


def test_a_later_dir_source_replaces_the_files_of_an_earlier_one(tmp_path):
    source = tmp_path / "src"
    for side in ("one", "two"):
        for d in range(3):
            (source / side / f"d{d}").mkdir(parents=True)
            (source / side / f"d{d}" / "same").write_text(f"{side}{d}")
            (source / side / f"d{d}" / f"only-{side}").write_text(side)
    staging = tmp_path / "staging"
    staging.mkdir()
    stage_copy(BuildContext(source, IgnoreMatcher.empty()), ["one", "two"], "/out/", workdir="/",
               staging_dir=staging, dest_is_dir=lambda _p: False, chown=None, chmod=None)
    listing = tree_listing(staging)
    for d in range(3):
        assert listing[f"/out/d{d}/same"][4] == f"two{d}".encode()
        assert listing[f"/out/d{d}/only-one"][4] == b"one"
        assert listing[f"/out/d{d}/only-two"][4] == b"two"


@pytest.mark.parametrize("epoch", [None, MTIME + 5])
def test_layer_times_are_the_ones_the_store_would_give_the_layer(tmp_path, monkeypatch, epoch):
    """With layer_times the copy writes each mtime as the layer records it, so the store's pass
    over a committed dir (match_layer_times) finds nothing to change, and the dir is the same as
    a copy with the source's times that the store then fixed."""
    from builder.layer import times as times_module

    source = tmp_path / "src"
    (source / "sub/deeper").mkdir(parents=True)
    stamps = {"sub/a": MTIME * 10**9 + 999_999_999, "sub/deeper/b": (MTIME + 60) * 10**9 + 1,
              "old": -1_500_000_000, "sub/link": MTIME * 10**9 + 7}
    for name in ("sub/a", "sub/deeper/b", "old"):
        (source / name).write_text(name)
    os.link(source / "sub/a", source / "sub/a-again")
    os.symlink("a", source / "sub/link")
    for name, ns in stamps.items():
        os.utime(source / name, ns=(ns, ns), follow_symlinks=False)
    for name, ns in (("sub/deeper", (MTIME + 9) * 10**9 + 5), ("sub", MTIME * 10**9 + 3)):
        os.utime(source / name, ns=(ns, ns))
    context = BuildContext(source, IgnoreMatcher.empty())
    fixed, direct = tmp_path / "fixed", tmp_path / "direct"
    for staging, layer_times in ((fixed, False), (direct, True)):
        staging.mkdir()
        stage_copy(context, [".", "<<EOF"], "/app/", workdir="/", staging_dir=staging, dest_is_dir=lambda _p: False,
                   chown=None, chmod=None, source_date_epoch=epoch, heredocs={"EOF": "doc"}, layer_times=layer_times)
    times_module.match_layer_times(fixed, epoch)
    assert _times(fixed) != {}

    def no_change_expected(*args, **kwargs):
        raise AssertionError(f"match_layer_times had to set a time: {args}")

    monkeypatch.setattr(times_module.os, "utime", no_change_expected)
    times_module.match_layer_times(direct, epoch)
    assert _times(direct) == _times(fixed)
    assert tree_listing(direct) == tree_listing(fixed)


def _refuse(*_args, **_kwargs):
    raise OSError(errno.EXDEV, "Invalid cross-device link")


@pytest.mark.parametrize("sendfile_works", [True, False])
def test_bytes_cross_file_systems_when_copy_file_range_refuses(tmp_path, monkeypatch, sendfile_works):
    """Context and store on two file systems: copy_file_range says EXDEV, sendfile carries the
    bytes (still in the kernel), and where that is refused too, read/write does."""
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    blobs = {"big": os.urandom((3 << 20) + 123), "small": b"small\n", "empty": b""}
    for name, data in blobs.items():
        (source / "d" / name).write_bytes(data)
    sent: list[int] = []
    real_sendfile = os.sendfile

    def sendfile(out_fd, in_fd, offset, count):
        if not sendfile_works:
            raise OSError(errno.EINVAL, "Invalid argument")
        done = real_sendfile(out_fd, in_fd, offset, count)
        sent.append(done)
        return done

    monkeypatch.setattr(copy_module.os, "copy_file_range", _refuse)
    monkeypatch.setattr(copy_module.os, "sendfile", sendfile)
    staging = tmp_path / "staging"
    staging.mkdir()
    _copy(BuildContext(source, IgnoreMatcher.empty()), staging)
    assert {name: (staging / "ctx/d" / name).read_bytes() for name in blobs} == blobs
    assert (sum(sent) == sum(map(len, blobs.values()))) if sendfile_works else sent == []
