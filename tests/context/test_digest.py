"""content_digest properties and the stat cache that spares re-reading unchanged files."""
from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from ctxhelpers import make_tree  # type: ignore[import-not-found]

import builder.context.tree as context_module
from builder.context.dockerignore import IgnoreMatcher
from builder.context.statcache import StatCache
from builder.context.tree import BuildContext, content_digest

SPEC = {
    "app/main.py": "print('hi')\n",
    "app/lib/util.py": "x = 1\n",
    "app/empty": None,
    "app/link": ("link", "lib/util.py"),
    "README.md": "readme\n",
    "ignored.log": "noise\n",
    "cache/blob": "noise\n",
}


def make_ctx(root: Path) -> BuildContext:
    make_tree(root, SPEC)
    (root / ".dockerignore").write_text("*.log\ncache\n")
    os.chmod(root / "app/main.py", 0o755)
    return BuildContext(root, IgnoreMatcher.load(root, None))


def digest_of(ctx: BuildContext, patterns=(".",), cache=None) -> str:
    return content_digest(ctx.select(list(patterns)), cache)


@pytest.fixture
def ctx(tmp_path: Path) -> BuildContext:
    return make_ctx(tmp_path / "ctx")


def test_digest_is_stable_and_well_formed(ctx):
    first = digest_of(ctx)
    assert first.startswith("sha256:") and len(first) == 71
    assert digest_of(ctx) == first


def test_ignored_files_never_change_it(ctx):
    before = digest_of(ctx)
    (ctx.root / "ignored.log").write_text("changed\n")
    (ctx.root / "new.log").write_text("new\n")
    (ctx.root / "cache/other").write_text("more\n")
    assert digest_of(ctx) == before


def test_times_and_inodes_never_count(ctx, tmp_path: Path):
    before = digest_of(ctx)
    os.utime(ctx.root / "app/main.py", (1, 1))
    os.utime(ctx.root / "app", (2, 2))
    assert digest_of(ctx) == before
    # a second checkout: other inodes, other mtimes, same content and modes
    other = tmp_path / "elsewhere"
    shutil.copytree(ctx.root, other, symlinks=True)
    for dirpath, _, files in os.walk(other):
        for name in files:
            os.utime(Path(dirpath) / name, (1234567, 1234567))
    assert digest_of(BuildContext(other, IgnoreMatcher.load(other, None))) == before


def test_context_owners_do_not_count_but_rootfs_owners_do(ctx):
    before = digest_of(ctx)
    os.chown(ctx.root / "README.md", 4321, 4321)
    assert digest_of(ctx) == before  # COPY gives context files 0:0 anyway
    stage = BuildContext.for_rootfs(ctx.root)
    stage_before = digest_of(stage, ["/README.md"])
    os.chown(ctx.root / "README.md", 1, 1)
    assert digest_of(stage, ["/README.md"]) != stage_before


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "app/main.py").write_text("print('bye')\n"),
        lambda root: os.chmod(root / "app/main.py", 0o644),
        lambda root: os.chmod(root / "app/main.py", 0o4755),
        lambda root: (os.unlink(root / "app/link"), os.symlink("main.py", root / "app/link")),
        lambda root: os.rename(root / "README.md", root / "README.txt"),
        lambda root: (root / "app/empty/new").mkdir(),
        lambda root: (root / "app/empty").rmdir(),
    ],
    ids=["content", "mode", "setuid", "link-target", "rename", "new-dir", "removed-dir"],
)
def test_what_does_change_it(ctx, change):
    before = digest_of(ctx)
    change(ctx.root)
    assert digest_of(ctx) != before


def test_xattrs_count(ctx):
    path = ctx.root / "README.md"
    try:
        os.setxattr(path, "user.origin", b"one")
    except OSError:
        pytest.skip("no user xattrs on this file system")
    before = digest_of(ctx)
    os.setxattr(path, "user.origin", b"two")
    assert digest_of(ctx) != before


def test_selection_only_covers_what_it_names(ctx):
    only_app = digest_of(ctx, ["app"])
    (ctx.root / "README.md").write_text("other\n")
    assert digest_of(ctx, ["app"]) == only_app
    assert digest_of(ctx, ["app"]) != digest_of(ctx, ["app", "README.md"])


class CountingHash:
    def __init__(self, real):
        self.real = real
        self.paths: list[Path] = []

    def __call__(self, path):
        self.paths.append(Path(path))
        return self.real(path)


def test_stat_cache_spares_reading_unchanged_files(tmp_path: Path, monkeypatch):
    root = tmp_path / "big"
    for i in range(2000):
        sub = root / f"d{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:04d}.txt").write_text(f"file {i}\n")
    ctx = BuildContext(root, IgnoreMatcher.empty())
    counter = CountingHash(context_module.hash_file)
    monkeypatch.setattr(context_module, "hash_file", counter)
    db = tmp_path / "state" / "statcache.db"

    with StatCache(db) as cache:
        first = digest_of(ctx, cache=cache)
    assert len(counter.paths) == 2000

    counter.paths.clear()
    with StatCache(db) as cache:  # a new process would open it the same way
        assert digest_of(ctx, cache=cache) == first
    assert counter.paths == []

    changed = root / "d07" / "f0007.txt"
    changed.write_text("changed, same size?\n")
    with StatCache(db) as cache:
        assert digest_of(ctx, cache=cache) != first
    assert counter.paths == [changed]

    # without a cache every file is read again, and the answer is the same
    counter.paths.clear()
    with StatCache(db) as cache:
        cached = digest_of(ctx, cache=cache)
    assert digest_of(ctx) == cached
    assert len(counter.paths) == 2000


def test_stat_cache_notices_chmod_and_same_size_rewrites(tmp_path: Path):
    path = tmp_path / "f"
    path.write_text("aaaa")
    with StatCache(tmp_path / "db") as cache:
        cache.remember(os.stat(path), "digest-a")
        cache.flush()
        assert cache.lookup(os.stat(path)) == "digest-a"
        time.sleep(0.01)
        path.write_text("bbbb")  # same size, new mtime/ctime
        assert cache.lookup(os.stat(path)) is None
        cache.remember(os.stat(path), "digest-b")
        cache.flush()
        os.chmod(path, 0o600)
        assert cache.lookup(os.stat(path)) is None


def test_corrupt_stat_cache_is_rebuilt_not_fatal(tmp_path: Path):
    root = make_tree(tmp_path / "ctx", {"a": "1", "b/c": "2"})
    ctx = BuildContext(root, IgnoreMatcher.empty())
    expected = digest_of(ctx)
    db = tmp_path / "statcache.db"
    db.write_bytes(b"this is not a sqlite database at all" * 100)
    with StatCache(db) as cache:
        assert digest_of(ctx, cache=cache) == expected
    with StatCache(db) as cache:
        assert cache.usable
        assert cache.lookup(os.lstat(root / "a")) is not None


def test_locked_stat_cache_only_costs_time(tmp_path: Path):
    root = make_tree(tmp_path / "ctx", {"a": "1", "b/c": "2"})
    ctx = BuildContext(root, IgnoreMatcher.empty())
    expected = digest_of(ctx)
    db = tmp_path / "statcache.db"
    StatCache(db).close()
    holder = sqlite3.connect(db, timeout=0.1)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with StatCache(db, timeout=0.1) as cache:
            assert digest_of(ctx, cache=cache) == expected
    finally:
        holder.rollback()
        holder.close()


def test_unwritable_stat_cache_location(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = StatCache(blocker / "sub" / "db")  # parent is a file: cannot exist
    assert not cache.usable
    root = make_tree(tmp_path / "ctx", {"a": "1"})
    ctx = BuildContext(root, IgnoreMatcher.empty())
    assert digest_of(ctx, cache=cache) == digest_of(ctx)


def test_two_processes_share_one_stat_cache(tmp_path: Path):
    import subprocess
    import sys

    root = tmp_path / "ctx"
    for i in range(300):
        make_tree(root, {f"d{i % 7}/f{i}": f"{i}\n"})
    db = tmp_path / "shared.db"
    script = (
        "import sys; from pathlib import Path;"
        "from builder.context.tree import BuildContext, content_digest;"
        "from builder.context.dockerignore import IgnoreMatcher;"
        "from builder.context.statcache import StatCache;"
        "ctx = BuildContext(Path(sys.argv[1]), IgnoreMatcher.empty());"
        "cache = StatCache(Path(sys.argv[2]));"
        "print(content_digest(ctx.select(['.']), cache)); cache.close()"
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(root), str(db)], stdout=subprocess.PIPE, env=env)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60)[0].decode().strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    expected = digest_of(BuildContext(root, IgnoreMatcher.empty()))
    assert outputs == [expected] * 3
    with StatCache(db) as cache:
        assert cache.lookup(os.lstat(root / "d0/f0")) is not None


def test_a_followed_source_links_digest_is_its_targets_content_and_its_name(tmp_path: Path):
    """A source symlink copies its target under its own name: the cache key must change when the
    target's content changes, and when the link is renamed (the copy's file name changes)."""
    root = make_tree(tmp_path / "ctx", {"real": "one", "w-link": ("link", "real")})
    ctx = BuildContext(root, IgnoreMatcher.empty())
    first = digest_of(ctx, ["w*"])
    (root / "real").write_text("two")
    changed = digest_of(ctx, ["w*"])
    assert changed != first
    os.rename(root / "w-link", root / "w-other")
    assert digest_of(ctx, ["w*"]) != changed


def test_a_warm_stat_cache_spares_each_file_its_listxattr_and_still_sees_xattr_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "ctx"
    for i in range(300):
        sub = root / f"d{i % 6}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:03d}.txt").write_text(f"file {i}\n")
    tagged = root / "d1" / "f001.txt"
    os.setxattr(tagged, "user.origin", b"first")
    ctx = BuildContext(root, IgnoreMatcher.empty())
    uncached = digest_of(ctx)
    listed: list[str] = []
    real_listxattr = os.listxattr

    def counting_listxattr(path, *args, **kwargs):
        listed.append(str(path))
        return real_listxattr(path, *args, **kwargs)

    monkeypatch.setattr(os, "listxattr", counting_listxattr)
    db = tmp_path / "statcache.db"
    with StatCache(db) as cache:
        assert digest_of(ctx, cache=cache) == uncached
    assert len([p for p in listed if p.endswith(".txt")]) == 300

    listed.clear()
    with StatCache(db) as cache:
        assert digest_of(ctx, cache=cache) == uncached  # the cached xattrs count as read ones
    assert [p for p in listed if p.endswith(".txt")] == []  # only the dirs were asked

    os.setxattr(tagged, "user.origin", b"second")  # moves the file's ctime
    listed.clear()
    with StatCache(db) as cache:
        changed = digest_of(ctx, cache=cache)
    assert [p for p in listed if p.endswith(".txt")] == [str(tagged)]
    assert changed != uncached and changed == digest_of(ctx)


def test_a_warm_dir_is_taken_whole_from_the_stat_cache_and_every_change_inside_is_seen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = make_tree(tmp_path / "ctx", {f"top/mid{m}/f{f}.txt": f"{m}-{f}\n" for m in range(3) for f in range(20)})
    make_tree(root, {"top/link": ("link", "mid0/f0.txt"), "top/mid1/deep/x": "x\n", "notes": "n\n"})
    db = tmp_path / "statcache.db"

    def set_ignore(text: str) -> None:
        ignore_file = root / ".dockerignore"
        if not ignore_file.exists() or ignore_file.read_text() != text:
            ignore_file.write_text(text)

    def cached_digest(ignore: str = "") -> str:
        set_ignore(ignore)
        ctx = BuildContext(root, IgnoreMatcher.load(root, None))
        with StatCache(db) as cache:
            return digest_of(ctx, cache=cache)

    def fresh_digest(ignore: str = "") -> str:
        set_ignore(ignore)
        return digest_of(BuildContext(root, IgnoreMatcher.load(root, None)))

    cached_digest()
    looked_up: list[int] = []
    real_lookup_many = StatCache.lookup_many
    monkeypatch.setattr(StatCache, "lookup_many",
                        lambda self, stats: looked_up.append(len(stats)) or real_lookup_many(self, stats))
    assert cached_digest() == fresh_digest()
    assert looked_up == []  # nothing changed: no dir was looked at file by file

    time.sleep(0.01)
    changes = [
        lambda: (root / "top/mid1/deep/x").write_text("y\n"),  # same size, two levels down
        lambda: os.chmod(root / "top/mid2/f3.txt", 0o600),
        lambda: os.rename(root / "top/mid0/f1.txt", root / "top/mid0/f1-renamed.txt"),
        lambda: (root / "top/mid2/new.txt").write_text("new\n"),
        lambda: os.chmod(root / "top/mid1", 0o700),
        lambda: os.setxattr(root / "top/mid0", "user.note", b"v"),
        lambda: (root / "top/link").unlink() or (root / "top/link").symlink_to("mid1/f0.txt"),
        lambda: (root / "top/mid2/f0.txt").unlink(),
    ]
    previous = cached_digest()
    for change in changes:
        change()
        now = cached_digest()
        assert now == fresh_digest() and now != previous
        previous = now
    # Which files are visible is part of a dir's signature too.
    assert cached_digest("top/mid0/f2.txt\n") == fresh_digest("top/mid0/f2.txt\n") != previous
    assert cached_digest() == previous
