"""Issue 10, item 5: the store is the user's alone, and nothing planted in it leads outside.

Snapshot dirs hold image contents as shipped (setuid binaries, device nodes): the store root is
0700, a root owned by someone else or writable by others is refused, and gc/prune/fsck walk the
store by dir fds without following links, so a link in place of one of its dirs never makes
them delete or read a victim dir.
"""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from builder.cli import main as cli_main
from builder.errors import StoreError
from builder.image.store import Store

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def make_victim(path: Path) -> dict[str, bytes]:
    """A dir of someone's files, old enough for any min_age; returns what it must keep holding."""
    files = {"precious.txt": b"keep me\n", "1": b"named like a snapshot\n",
             "blob-0123": b"named like a temp blob\n", hashlib.sha256(b"x").hexdigest(): b"named like a blob\n"}
    path.mkdir()
    for name, data in files.items():
        (path / name).write_bytes(data)
    old = time.time() - 7 * 86400
    for entry in path.iterdir():
        os.utime(entry, (old, old))
    return files


def victim_contents(path: Path) -> dict[str, bytes]:
    return {entry.name: entry.read_bytes() for entry in path.iterdir()}


# -- the root -------------------------------------------------------------------------------------


def test_new_store_root_is_0700(tmp_path):
    root = tmp_path / "parent" / "store"
    os.umask(old := os.umask(0o022))
    Store.open(root)
    assert mode_of(root) == 0o700
    assert mode_of(root.parent) == 0o777 & ~old  # the parents are the user's business


def test_store_of_an_older_version_is_tightened(tmp_path):
    root = tmp_path / "store"
    Store.open(root).put_blob(b"data")
    os.chmod(root, 0o755)  # as earlier builders left it
    Store.open(root)
    assert mode_of(root) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_root_writable_by_others_is_refused(tmp_path, mode):
    root = tmp_path / "store"
    root.mkdir()
    os.chmod(root, mode)
    with pytest.raises(StoreError) as info:
        Store.open(root)
    assert "writable by" in info.value.message and str(root) in info.value.message
    assert f"chmod 700 {root}" in info.value.hint
    assert list(root.iterdir()) == []  # nothing created in it
    assert mode_of(root) == mode


@needs_root
def test_root_owned_by_another_user_is_refused(tmp_path, capsys):
    root = tmp_path / "store"
    Store.open(root)
    os.chown(root, 65534, 65534)
    with pytest.raises(StoreError) as info:
        Store.open(root)
    assert "uid 65534" in info.value.message and "chown" in info.value.hint
    assert cli_main(["--root", str(root), "images"]) == 1
    assert "uid 65534" in capsys.readouterr().err


@needs_root
def test_store_dir_owned_by_another_user_is_refused(tmp_path):
    root = tmp_path / "store"
    Store.open(root)
    os.chown(root / "s", 65534, 65534)
    with pytest.raises(StoreError) as info:
        Store.open(root)
    assert str(root / "s") in info.value.message


# -- links planted in place of the store's dirs ---------------------------------------------------


def store_with_garbage(root: Path) -> Store:
    """A store holding an unreferenced blob, a dead snapshot (row n=1) and a stale temp file:
    what gc would remove, all old enough."""
    store = Store.open(root)
    store.put_blob(b"unreferenced")
    layer = root.parent / "layer"
    (layer / "d").mkdir(parents=True)
    (layer / "d" / "f").write_text("x")
    digests = store.put_layer_from_dir(layer)
    assert store.has_snapshot(digests.diff_id)
    (root / "tmp" / "blob-stale").write_bytes(b"left by a killed writer")
    old = time.time() - 7 * 86400
    with store.index.tx() as tx:
        tx.execute("UPDATE snapshots SET last_used=?", (old,))
    for path in [*store.blobs_dir.iterdir(), *store.tmp_dir.iterdir()]:
        os.utime(path, (old, old))
    return store


def plant_link(root: Path, sub: str, victim: Path) -> None:
    real = root / sub
    real.rename(real.with_name(real.name + ".moved"))
    real.symlink_to(victim)


@pytest.mark.parametrize("sub", ["blobs/sha256", "s", "tmp", "blobs", "locks"])
def test_linked_store_dir_is_refused_by_open_prune_and_fsck(tmp_path, capsys, sub):
    root = tmp_path / "store"
    store_with_garbage(root)
    victim = tmp_path / "victim"
    files = make_victim(victim)
    plant_link(root, sub, victim)
    outcomes = []
    for command in (["prune", "--all"], ["fsck"], ["df"]):
        code = cli_main(["--root", str(root), *command])
        outcomes.append((command[0], code, str(root / sub) in capsys.readouterr().err))
    assert victim_contents(victim) == files
    assert outcomes == [("prune", 1, True), ("fsck", 1, True), ("df", 1, True)]
    with pytest.raises(StoreError) as info:
        Store.open(root)
    assert str(root / sub) in info.value.message and "symbolic link" in info.value.message


@pytest.mark.parametrize("sub", ["blobs/sha256", "s", "tmp"])
def test_link_planted_under_an_open_store_is_never_followed(tmp_path, sub):
    """The Store was opened before the link appeared: gc and fsck still do not walk through it."""
    root = tmp_path / "store"
    store = store_with_garbage(root)
    victim = tmp_path / "victim"
    files = make_victim(victim)
    plant_link(root, sub, victim)
    try:
        store.gc(min_age=0)
        refused = None
    except StoreError as exc:
        refused = exc.message
    problems = store.fsck()
    assert victim_contents(victim) == files
    assert refused is not None and str(root / sub) in refused
    assert any(str(root / sub) in p and "symbolic link" in p for p in problems), problems


def test_links_inside_store_dirs_are_removed_not_followed(tmp_path):
    root = tmp_path / "store"
    store = store_with_garbage(root)
    victim = tmp_path / "victim"
    files = make_victim(victim)
    # A blob that is a link to a host file whose content matches the name: it must not pass for
    # a blob (has_blob, open_blob, fsck), and gc removes the link only.
    host_file = victim / "precious.txt"
    linked_blob = store.blobs_dir / hashlib.sha256(files["precious.txt"]).hexdigest()
    linked_blob.symlink_to(host_file)
    digest = "sha256:" + linked_blob.name
    assert not store.has_blob(digest)
    with pytest.raises(StoreError):
        store.read_blob(digest)
    assert f"stray entry in blobs/sha256: {linked_blob.name}" in store.fsck()
    (store.tmp_dir / "link").symlink_to(victim)
    (store.tmp_dir / "work-dead").mkdir()
    (store.tmp_dir / "work-dead" / "inner").symlink_to(victim)
    old = time.time() - 7 * 86400
    for path in (linked_blob, store.tmp_dir / "link", store.tmp_dir / "work-dead"):
        os.utime(path, (old, old), follow_symlinks=False)
    result = store.gc(min_age=0)
    assert digest in result.removed_blobs
    assert {"link", "work-dead", "blob-stale"} <= set(result.removed_tmp)
    assert list(store.tmp_dir.iterdir()) == [] and not os.path.lexists(linked_blob)
    assert victim_contents(victim) == files
    assert store.fsck() == []


def test_deep_tree_in_tmp_is_removed(tmp_path):
    """Removal by dir fds copes with a hostile depth (a recursive walk hit Python's recursion
    limit and crashed gc) while keeping only a bounded number of dir fds open."""
    root = tmp_path / "store"
    store = Store.open(root)
    top = store.tmp_dir / "work-deep"
    fd = os.open(store.tmp_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.mkdir("work-deep", dir_fd=fd)
        current = os.open("work-deep", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        for _ in range(1200):
            os.mkdir("d", dir_fd=current)
            with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o444, dir_fd=current), "wb") as f:
                f.write(b"x")
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=current)
            os.fchmod(current, 0o555)
            os.close(current)
            current = inner
        os.close(current)
    finally:
        os.close(fd)
    old = time.time() - 3600
    os.utime(top, (old, old))
    try:
        assert store.gc(min_age=0).removed_tmp == ["work-deep"]
        assert not top.exists()
    finally:  # pytest's own tmp cleanup would hit the recursion limit on a leftover
        subprocess.run(["rm", "-rf", str(top)], check=True)


def test_cache_mount_dir_link_is_refused(tmp_path):
    root = tmp_path / "store"
    Store.open(root)
    victim = tmp_path / "victim"
    make_victim(victim)
    (root / "cache-mounts").symlink_to(victim)
    with pytest.raises(StoreError) as info:
        Store.open(root)
    assert str(root / "cache-mounts") in info.value.message


def test_index_db_link_is_refused(tmp_path):
    root = tmp_path / "store"
    Store.open(root)
    victim = tmp_path / "victim.db"
    victim.write_bytes(b"")
    (root / "index.db").rename(root / "index.db.moved")
    (root / "index.db").symlink_to(victim)
    with pytest.raises(StoreError) as info:
        Store.open(root)
    assert str(root / "index.db") in info.value.message
    assert victim.read_bytes() == b""


def test_snapshot_dir_link_is_not_a_snapshot(tmp_path):
    """s/<n> replaced by a link to a host dir must not become an overlay lowerdir."""
    root = tmp_path / "store"
    store = Store.open(root)
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "f").write_text("layer\n")
    digests = store.put_layer_from_dir(layer)
    snapshot = store.snapshot_dir(digests.diff_id)
    victim = tmp_path / "victim"
    make_victim(victim)
    os.rename(snapshot, tmp_path / "moved")
    snapshot.symlink_to(victim)
    assert not store.has_snapshot(digests.diff_id)
    assert any("is not a directory" in p for p in store.fsck())


def test_lock_file_link_is_refused(tmp_path, capsys):
    """A link in place of a lock file made prune open (and create) its target read-write."""
    root = tmp_path / "store"
    Store.open(root)
    victim = tmp_path / "victim-file"
    (root / "locks" / "builds").unlink(missing_ok=True)
    (root / "locks" / "builds").symlink_to(victim)
    code = cli_main(["--root", str(root), "prune"])
    assert not os.path.lexists(victim)
    assert code == 1 and "symbolic link" in capsys.readouterr().err
