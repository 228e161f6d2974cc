"""stage_copy: Docker's COPY destination, ownership, mode, link and exclude rules, on real trees."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ctxhelpers import make_tree, tree_listing  # type: ignore[import-not-found]

from builder.context.dockerignore import IgnoreMatcher
from builder.context.tree import BuildContext
from builder.errors import ContextError, Pos
from builder.parse.ast import Heredoc
from builder.solve.copy import DirMeta, parse_chmod, stage_copy

POS = Pos("Buildfile", 7, 1)
HOST_UID = 1234


@pytest.fixture
def ctx(tmp_path: Path) -> BuildContext:
    root = make_tree(
        tmp_path / "ctx",
        {
            "a.txt": "A",
            "b.txt": "B",
            "tool.sh": "#!/bin/sh\n",
            "src/main.py": "main",
            "src/pkg/mod.py": "mod",
            "src/pkg/data.bin": b"\x00\x01",
            "src/link": ("link", "pkg/mod.py"),
            "src/outlink": ("link", "/etc/passwd"),
            "secret.env": "TOKEN=1",
        },
    )
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(Path(dirpath) / name, HOST_UID, HOST_UID, follow_symlinks=False)
    os.chmod(root / "tool.sh", 0o4755)  # after chown, which clears setuid
    os.chmod(root / "src/pkg", 0o750)
    os.utime(root / "a.txt", (1_600_000_000, 1_600_000_000))
    (root / ".dockerignore").write_text("secret.env\n")
    return BuildContext(root, IgnoreMatcher.load(root, None))


def copy(ctx, sources, dest, staging, **kw):
    options = dict(
        workdir="/",
        staging_dir=staging,
        dest_is_dir=lambda path: False,
        chown=None,
        chmod=None,
        pos=POS,
    )
    options.update(kw)
    return stage_copy(ctx, sources, dest, **options)


def test_single_file_to_a_file_path(ctx, staging):
    result = copy(ctx, ["a.txt"], "/opt/renamed.txt", staging)
    listing = tree_listing(staging)
    assert listing == {
        "/opt": ("dir", 0o755, 0, 0, None),
        "/opt/renamed.txt": ("file", 0o644, 0, 0, b"A"),
    }
    assert result.paths == ["/opt", "/opt/renamed.txt"]
    assert os.lstat(staging / "opt/renamed.txt").st_mtime == 1_600_000_000  # mtime preserved


def test_trailing_slash_dest_is_a_dir(ctx, staging):
    copy(ctx, ["a.txt"], "/opt/", staging)
    assert (staging / "opt/a.txt").read_text() == "A"


def test_existing_image_dir_takes_the_file_inside(ctx, staging):
    copy(ctx, ["a.txt"], "/etc", staging, dest_is_dir=lambda path: path == "/etc")
    assert (staging / "etc/a.txt").read_text() == "A"
    assert not (staging / "etc").is_file()


def test_dest_relative_to_workdir(ctx, staging):
    copy(ctx, ["a.txt"], "sub/x.txt", staging, workdir="/srv/app")
    assert (staging / "srv/app/sub/x.txt").read_text() == "A"
    copy(ctx, ["b.txt"], ".", staging, workdir="/srv/app")
    assert (staging / "srv/app/b.txt").read_text() == "B"


def test_dir_source_copies_its_contents(ctx, staging):
    copy(ctx, ["src"], "/app", staging)
    listing = tree_listing(staging)
    assert listing["/app"] == ("dir", 0o755, 0, 0, None)
    assert listing["/app/main.py"][4] == b"main"
    assert listing["/app/pkg"] == ("dir", 0o750, 0, 0, None)  # copied dirs keep their mode
    assert listing["/app/pkg/mod.py"][4] == b"mod"
    assert "/app/src" not in listing


def test_context_owners_become_root(ctx, staging):
    copy(ctx, ["src", "tool.sh"], "/app/", staging)
    owners = {(uid, gid) for _, _, uid, gid, _ in tree_listing(staging).values()}
    assert owners == {(0, 0)}


def test_rootfs_source_keeps_owners(tmp_path, staging):
    rootfs = make_tree(tmp_path / "rootfs", {"etc/conf": "c", "etc/sub/f": "f"})
    os.chown(rootfs / "etc/conf", 100, 200)
    os.chown(rootfs / "etc/sub", 101, 201)
    copy(BuildContext.for_rootfs(rootfs), ["/etc"], "/copied", staging)
    listing = tree_listing(staging)
    assert listing["/copied/conf"][2:4] == (100, 200)
    assert listing["/copied/sub"][2:4] == (101, 201)


def test_chown_applies_to_copied_entries_and_created_dirs(ctx, staging):
    copy(ctx, ["src"], "/home/u/app", staging, chown=(1000, 1001))
    listing = tree_listing(staging)
    for path in ["/home", "/home/u", "/home/u/app", "/home/u/app/pkg", "/home/u/app/pkg/mod.py", "/home/u/app/link"]:
        assert listing[path][2:4] == (1000, 1001), path


def test_existing_image_parents_keep_image_metadata(ctx, staging):
    meta = {"/home": DirMeta(0o700, 5, 6, 42 * 10**9)}
    copy(ctx, ["a.txt"], "/home/u/", staging, chown=(1000, 1000), image_dir_meta=meta.get)
    listing = tree_listing(staging)
    assert listing["/home"] == ("dir", 0o700, 5, 6, None)
    assert listing["/home/u"] == ("dir", 0o755, 1000, 1000, None)
    assert os.lstat(staging / "home").st_mtime == 42


def test_chmod_octal_and_symbolic(ctx, staging):
    copy(ctx, ["src"], "/app/", staging, chmod="0640")
    listing = tree_listing(staging)
    assert listing["/app/main.py"][1] == 0o640
    assert listing["/app/pkg"][1] == 0o640  # Docker applies --chmod to copied dirs too
    assert listing["/app"][1] == 0o755  # but not to the created destination
    assert listing["/app/link"][0] == "link"

    fn = parse_chmod("u+x,go-w")
    assert fn(0o664, False) == 0o744
    assert parse_chmod("a=rX")(0o700, True) == 0o555
    assert parse_chmod("a=rX")(0o600, False) == 0o444
    with pytest.raises(ContextError):
        parse_chmod("rwx")


def test_setuid_and_modes_preserved(ctx, staging):
    copy(ctx, ["tool.sh"], "/usr/bin/tool", staging)
    st = os.lstat(staging / "usr/bin/tool")
    assert stat.S_IMODE(st.st_mode) == 0o4755  # chown must not have cleared setuid
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_source_date_epoch_for_invented_times(ctx, staging):
    copy(ctx, ["a.txt"], "/x/y/", staging, source_date_epoch=1_700_000_000)
    assert os.lstat(staging / "x").st_mtime == 1_700_000_000
    assert os.lstat(staging / "x/y").st_mtime == 1_700_000_000
    assert os.lstat(staging / "x/y/a.txt").st_mtime == 1_600_000_000


def test_several_sources_are_copied_onto_the_dest_in_turn(ctx, staging):
    """BuildKit copies each source onto the destination: without a trailing / the last file wins
    (no "must end with a /" error: that is the classic builder's)."""
    copy(ctx, ["a.txt", "b.txt"], "/opt", staging)
    assert tree_listing(staging)["/opt"][0::4] == ("file", b"B")
    copy(ctx, ["a.txt", "b.txt"], "/dir/", staging)
    assert sorted(p.name for p in (staging / "dir").iterdir()) == ["a.txt", "b.txt"]


def test_glob_with_several_matches_onto_a_file_path_keeps_the_last(ctx, staging):
    copy(ctx, ["*.txt"], "/data", staging)
    assert tree_listing(staging)["/data"][0::4] == ("file", b"B")


def test_glob_with_several_matches_into_an_image_dir(ctx, staging):
    copy(ctx, ["*.txt"], "/data", staging, dest_is_dir=lambda path: path == "/data")
    assert sorted(p.name for p in (staging / "data").iterdir()) == ["a.txt", "b.txt"]


def test_a_dir_source_makes_the_dest_a_dir_for_the_next_sources(ctx, staging):
    copy(ctx, ["src/pkg", "a.txt", "<<doc"], "/out", staging, heredocs={"doc": "d\n"})
    assert sorted(p.name for p in (staging / "out").iterdir()) == ["a.txt", "data.bin", "doc", "mod.py"]
    with pytest.raises(ContextError) as info:  # a file there first: a dir cannot replace it
        copy(ctx, ["b.txt", "src/pkg"], "/out2", staging)
    assert "/out2" in info.value.message


def test_a_wildcard_matching_nothing_beside_one_file_copies_the_file(ctx, staging):
    copy(ctx, ["*.nothing", "a.txt"], "/app.txt", staging)
    assert tree_listing(staging) == {"/app.txt": ("file", 0o644, 0, 0, b"A")}


def test_heredocs_are_copied_after_the_files(ctx, staging):
    copy(ctx, ["<<doc", "a.txt"], "/one", staging, heredocs={"doc": "from heredoc\n"})
    assert tree_listing(staging)["/one"][4] == b"from heredoc\n"


def test_glob_with_one_match_names_the_file(ctx, staging):
    copy(ctx, ["a.*"], "/app.txt", staging)
    assert (staging / "app.txt").read_text() == "A"


def test_symlinks_inside_a_copied_dir_stay_links(ctx, staging):
    copy(ctx, ["src"], "/app/", staging)
    assert os.readlink(staging / "app/outlink") == "/etc/passwd"
    assert os.readlink(staging / "app/link") == "pkg/mod.py"


def test_a_symlink_source_is_followed_inside_the_context(tmp_path, staging):
    """BuildKit (FollowSymlinks) copies what a source link points to, under the link's name; a
    link to a dir copies that dir's contents; an absolute target is inside the context; links
    below a copied dir stay links. Checked with dockerd 20.10 + BuildKit."""
    root = make_tree(tmp_path / "ctx", {
        "real": "content", "link": ("link", "real"), "chain": ("link", "link"),
        "absin": ("link", "/real"), "up": ("link", "../real"), "dir/a": "a", "dir/inner": ("link", "a"),
        "dlink": ("link", "dir"), "w1": "w1", "wl2": ("link", "w1"),
    })
    os.chmod(root / "real", 0o600)
    ctx = BuildContext(root, IgnoreMatcher.empty())
    copy(ctx, ["link"], "/t1", staging)
    copy(ctx, ["link", "chain", "absin", "up"], "/d/", staging)
    copy(ctx, ["dlink"], "/t3", staging)
    copy(ctx, ["w*"], "/w/", staging)
    listing = tree_listing(staging)
    assert listing["/t1"] == ("file", 0o600, 0, 0, b"content")
    for name in ("link", "chain", "absin", "up"):
        assert listing[f"/d/{name}"] == ("file", 0o600, 0, 0, b"content")
    assert listing["/t3/a"][0::4] == ("file", b"a") and listing["/t3/inner"][0::4] == ("link", "a")
    assert listing["/w/wl2"][0::4] == ("file", b"w1")


@pytest.mark.parametrize("target,words", [
    ("missing", "points to nothing"), ("/etc/passwd", "points outside the build context"),
    ("secret.env", "points to nothing"),
])
def test_a_symlink_source_that_leads_nowhere_is_an_error(target, words, tmp_path, staging):
    """BuildKit: "not found". A target out of the context is never read on the host, and an
    ignored target is as absent as in the context Docker sends."""
    root = make_tree(tmp_path / "ctx", {"src": ("link", target), "secret.env": "x", ".dockerignore": "secret.env\n"})
    ctx = BuildContext(root, IgnoreMatcher.load(root, None))
    for sources in (["src"], ["s*"]):
        with pytest.raises(ContextError) as info:
            copy(ctx, sources, "/x", staging)
        assert words in info.value.message and info.value.pos == POS
    assert list(staging.iterdir()) == []


def test_hardlinks_within_the_selection_are_kept(tmp_path, staging):
    root = make_tree(tmp_path / "ctx", {"d/one": "same"})
    os.link(root / "d/one", root / "d/two")
    copy(BuildContext(root, IgnoreMatcher.empty()), ["d"], "/h", staging)
    one, two = os.lstat(staging / "h/one"), os.lstat(staging / "h/two")
    assert one.st_ino == two.st_ino and one.st_nlink == 2


def test_ignored_files_are_not_copied(ctx, staging):
    copy(ctx, ["."], "/all", staging)
    names = set(tree_listing(staging))
    assert "/all/secret.env" not in names and "/all/a.txt" in names
    with pytest.raises(ContextError) as info:
        copy(ctx, ["secret.env"], "/x", staging)
    assert "excluded by" in info.value.hint


def test_exclude_flag(ctx, staging):
    copy(ctx, ["src"], "/app", staging, exclude=["pkg/*.bin", "main.py"])
    names = set(tree_listing(staging))
    assert "/app/pkg/mod.py" in names
    assert "/app/pkg/data.bin" not in names
    assert "/app/main.py" not in names


def test_exclude_flag_with_exception(ctx, staging):
    copy(ctx, ["src"], "/app", staging, exclude=["pkg", "!pkg/mod.py"])
    listing = tree_listing(staging)
    assert "/app/pkg/mod.py" in listing and "/app/pkg/data.bin" not in listing
    assert listing["/app/pkg"][1] == 0o750  # the kept path's parent made like its source


def test_exclude_applies_to_glob_matches(ctx, staging):
    copy(ctx, ["*.txt"], "/d/", staging, exclude=["b.txt"])
    assert sorted(p.name for p in (staging / "d").iterdir()) == ["a.txt"]


def test_parents_flag(ctx, staging):
    copy(ctx, ["src/pkg/mod.py", "a.txt"], "/out/", staging, parents=True)
    listing = tree_listing(staging)
    assert listing["/out/src/pkg/mod.py"][4] == b"mod"
    assert listing["/out/src/pkg"][1] == 0o750
    assert listing["/out/a.txt"][4] == b"A"


def test_parents_pivot(ctx, staging):
    copy(ctx, ["src/./pkg/mod.py"], "/out/", staging, parents=True)
    names = set(tree_listing(staging))
    assert "/out/pkg/mod.py" in names and "/out/src" not in names


def test_parents_with_a_dir_source(ctx, staging):
    copy(ctx, ["src/pkg"], "/out/", staging, parents=True)
    names = set(tree_listing(staging))
    assert {"/out/src/pkg/mod.py", "/out/src/pkg/data.bin"} <= names


def test_heredoc_sources(ctx, staging):
    copy(
        ctx,
        ["<<EOF", "<<-'conf'"],
        "/etc/app/",
        staging,
        heredocs={"EOF": "hello\n", "conf": Heredoc("conf", "k=v\n", False, True)},
    )
    listing = tree_listing(staging)
    assert listing["/etc/app/EOF"] == ("file", 0o644, 0, 0, b"hello\n")
    assert listing["/etc/app/conf"][4] == b"k=v\n"
    copy(ctx, ["<<EOF"], "/single", staging, heredocs={"EOF": ("a", "b\n")}, chown=(7, 7), chmod="755")
    assert tree_listing(staging)["/single"] == ("file", 0o755, 7, 7, b"ab\n")


def test_outbound_symlink_component_is_an_error_and_writes_nothing(tmp_path, staging):
    outside = make_tree(tmp_path / "outside", {"secret": "s"})
    root = make_tree(tmp_path / "ctx", {"ok": "1", "out": ("link", str(outside))})
    ctx = BuildContext(root, IgnoreMatcher.empty())
    with pytest.raises(ContextError) as info:
        copy(ctx, ["ok", "out/secret"], "/x/", staging)
    assert "points outside the build context" in info.value.message
    assert list(staging.iterdir()) == []


def test_dotdot_source_is_an_error(ctx, staging):
    with pytest.raises(ContextError) as info:
        copy(ctx, ["../ctx/a.txt"], "/x", staging)
    assert "outside the build context" in info.value.message
    assert list(staging.iterdir()) == []


def test_absolute_source_is_the_context_root(ctx, staging):
    copy(ctx, ["/a.txt"], "/x", staging)
    assert (staging / "x").read_text() == "A"


def test_dest_through_a_link_written_by_the_same_copy_is_refused(tmp_path, staging):
    sentinel = tmp_path / "victim"
    sentinel.mkdir()
    root = make_tree(tmp_path / "ctx", {"d/escape": ("link", str(sentinel)), "e/escape/pwn": "x"})
    ctx = BuildContext(root, IgnoreMatcher.empty())
    with pytest.raises(ContextError):
        copy(ctx, ["d", "e"], "/t/", staging)
    assert list(sentinel.iterdir()) == []


def test_result_does_not_depend_on_umask(ctx, tmp_path):
    listings = []
    for mask in (0o000, 0o077):
        out = tmp_path / f"staging-{mask:o}"
        out.mkdir()
        old = os.umask(mask)
        try:
            copy(ctx, ["src", "<<EOF"], "/app/x/", out, heredocs={"EOF": "doc"})
        finally:
            os.umask(old)
        listings.append(tree_listing(out))
    assert listings[0] == listings[1]


def test_destination_follows_parent_image_symlinks(ctx, staging, tmp_path):
    from builder.snapshot.view import LayeredView
    from builder.solve.copy import view_dir_meta, view_resolver

    layer = make_tree(tmp_path / "base-layer", {"usr/bin": None, "bin": ("link", "usr/bin"), "srv": None})
    os.chown(layer / "usr/bin", 5, 6)
    os.chmod(layer / "usr/bin", 0o711)
    os.utime(layer / "usr/bin", (77, 77))
    view = LayeredView([layer])
    options = dict(
        dest_is_dir=view.is_dir, resolve_image_path=view_resolver(view), image_dir_meta=view_dir_meta(view)
    )
    copy(ctx, ["tool.sh"], "/bin/", staging, **options)
    listing = tree_listing(staging)
    assert "/bin" not in listing  # the image's /bin symlink is not shadowed by a real dir
    assert listing["/usr/bin"] == ("dir", 0o711, 5, 6, None)  # repeated unchanged
    assert os.lstat(staging / "usr/bin").st_mtime == 77
    assert listing["/usr/bin/tool.sh"][4] == b"#!/bin/sh\n"
    # a file destination through the link: parents resolve, the name stays
    out = tmp_path / "staging2"
    out.mkdir()
    copy(ctx, ["a.txt"], "/bin/renamed", out, **options)
    assert set(tree_listing(out)) == {"/usr", "/usr/bin", "/usr/bin/renamed"}
    # a missing tail under a resolved prefix is created
    out3 = tmp_path / "staging3"
    out3.mkdir()
    copy(ctx, ["src"], "/bin/new/app", out3, **options)
    assert "/usr/bin/new/app/main.py" in tree_listing(out3)


def test_wildcard_matching_nothing_makes_nothing(ctx, staging):
    """BuildKit returns before making the destination when wildcards match nothing."""
    for dest in ("/opt/app/", "/opt/app"):
        result = copy(ctx, ["*.nothing", "src/*.nothing"], dest, staging)
        assert result.paths == [] and list(staging.iterdir()) == []


def test_wildcard_under_a_missing_dir_is_an_error(ctx, staging):
    with pytest.raises(ContextError) as info:
        copy(ctx, ["nodir/*.txt"], "/x/", staging)
    assert "file not found" in info.value.message and info.value.pos == POS


def test_bad_wildcard_is_a_positioned_error(ctx, staging):
    with pytest.raises(ContextError) as info:
        copy(ctx, ["src/[abc"], "/x/", staging)
    assert info.value.pos == POS and "invalid wildcard" in info.value.message


_A = {"/ctx/a", "/ctx/a/subx", "/ctx/a/subx.txt", "/ctx/a/subx/f"}
_B = {"/ctx/b", "/ctx/b/keep"}
_TOP = {"/ctx", "/ctx/top", "/ctx/x.txt"}
_DIR = {"/ctx/dir", "/ctx/dir/x.txt", "/ctx/dir/sub", "/ctx/dir/sub/x.txt"}


@pytest.mark.parametrize("patterns,expected", [
    (["dir", "!**/x.txt"], _TOP | _A | _B),
    (["a", "!*/sub*"], _TOP | _B | _DIR),
    (["dir", "!dir/*.txt"], _TOP | _A | _B | {"/ctx/dir", "/ctx/dir/x.txt"}),
    (["dir", "!d*/sub/x.txt"], _TOP | _A | _B),
    (["dir", "!dir/nothere"], _TOP | _A | _B | {"/ctx/dir"}),
    (["dir", "!dir/sub/x.txt"], _TOP | _A | _B | {"/ctx/dir", "/ctx/dir/sub", "/ctx/dir/sub/x.txt"}),
    (["dir", "!**"], _TOP | _A | _B | _DIR),
    (["*", "!dir/sub"], {"/ctx", "/ctx/dir", "/ctx/dir/sub", "/ctx/dir/sub/x.txt"}),
], ids=["wild-suffix", "wild-dir", "literal-dir-prefix", "wild-prefix", "empty-entered-dir",
        "deep-literal", "match-all-exception", "star-then-dir"])
def test_dockerignore_exceptions_reach_into_ignored_dirs_as_docker_does(patterns, expected, tmp_path, staging):
    """`COPY . /ctx` with each .dockerignore, as dockerd 20.10 + BuildKit gave it: an ignored dir is
    entered (and sent, even empty) only for an exception that starts with its path; a wildcard
    exception (`!**/x.txt`, `!*/sub*`) never brings anything back from inside one."""
    root = make_tree(tmp_path / "ctx", {
        "dir/x.txt": "1", "dir/sub/x.txt": "2", "x.txt": "3", "a/subx/f": "4", "a/subx.txt": "5",
        "b/keep": "6", "top": "7", ".dockerignore": "\n".join(patterns) + "\n",
    })
    ctx = BuildContext(root, IgnoreMatcher.load(root, None))
    copy(ctx, ["."], "/ctx", staging)
    assert set(tree_listing(staging)) - {"/ctx/.dockerignore"} == expected


def test_a_file_under_a_skipped_dir_is_not_found_even_if_an_exception_matches_it(tmp_path, staging):
    root = make_tree(tmp_path / "ctx", {"dir/sub/x.txt": "2", ".dockerignore": "dir\n!*/sub/x.txt\n"})
    ctx = BuildContext(root, IgnoreMatcher.load(root, None))
    with pytest.raises(ContextError) as info:
        copy(ctx, ["dir/sub/x.txt"], "/f", staging)
    assert "file not found" in info.value.message
    for pattern in (["dir/*/x.txt"], ["dir/sub/*"]):
        assert copy(ctx, pattern, "/f", staging).paths == []
