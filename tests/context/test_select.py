"""BuildContext.select: patterns, globs, containment, ignored files, rootfs (COPY --from) mode."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from ctxhelpers import make_tree  # type: ignore[import-not-found]

from builder.context.dockerignore import IgnoreMatcher
from builder.context.tree import BuildContext
from builder.errors import ContextError, Pos

POS = Pos("Buildfile", 3, 1)


@pytest.fixture
def ctx(tmp_path: Path) -> BuildContext:
    root = make_tree(
        tmp_path / "ctx",
        {
            "a.txt": "a",
            "b.txt": "b",
            "c.md": "c",
            "src/main.py": "print()",
            "src/util/helpers.py": "x",
            "src/util/x.txt": "x",
            "docs/x.txt": "d",
            "secret.key": "k",
            "logs/app.log": "l",
            "logs/keep.log": "k",
        },
    )
    (root / ".dockerignore").write_text("secret.key\nlogs\n!logs/keep.log\n")
    return BuildContext(root, IgnoreMatcher.load(root, None))


def rels(selected):
    return [s.relpath for s in selected]


def test_literal_file_dir_and_root_spellings(ctx):
    assert rels(ctx.select(["a.txt"])) == ["a.txt"]
    assert rels(ctx.select(["/a.txt"])) == ["a.txt"]
    assert rels(ctx.select(["./a.txt"])) == ["a.txt"]
    assert rels(ctx.select(["src/"])) == ["src"]
    assert rels(ctx.select(["src/util/../main.py"])) == ["src/main.py"]
    root = ctx.select(["."])
    assert rels(root) == ["."] and root[0].kind == "dir"
    assert rels(ctx.select(["/"])) == ["."]
    kinds = {s.relpath: s.kind for s in ctx.select(["a.txt", "src"])}
    assert kinds == {"a.txt": "file", "src": "dir"}


def test_globs_match_per_component_sorted(ctx):
    assert rels(ctx.select(["*.txt"])) == ["a.txt", "b.txt"]
    assert rels(ctx.select(["?.md"])) == ["c.md"]
    assert rels(ctx.select(["[ab].txt"])) == ["a.txt", "b.txt"]
    assert rels(ctx.select(["[^a].txt"])) == ["b.txt"]
    assert rels(ctx.select(["*/x.txt"])) == ["docs/x.txt"]
    assert rels(ctx.select(["src/*/*.py"])) == ["src/util/helpers.py"]
    assert all(s.from_glob for s in ctx.select(["*.txt"]))


def test_double_star_is_not_recursive_in_copy_sources(ctx):
    # fsutil matches `**` with filepath.Match: it is `*` within one component.
    assert rels(ctx.select(["**/x.txt"])) == ["docs/x.txt"]
    assert rels(ctx.select(["**.txt"])) == ["a.txt", "b.txt"]


def test_ignored_files_are_invisible(ctx):
    assert "secret.key" not in rels(ctx.select(["*"]))
    with pytest.raises(ContextError) as info:
        ctx.select(["secret.key"], pos=POS)
    err = info.value
    assert err.pos == POS
    assert 'file not found in build context: "secret.key"' in err.message
    assert ".dockerignore" in err.hint


def test_exception_inside_ignored_dir(ctx):
    selected = ctx.select(["logs"])
    assert rels(selected) == ["logs"]
    assert [e.relpath for e in ctx.walk(selected[0])] == [".", "keep.log"]
    assert rels(ctx.select(["logs/keep.log"])) == ["logs/keep.log"]
    with pytest.raises(ContextError):
        ctx.select(["logs/app.log"])


def test_missing_source_message_and_hint(ctx):
    with pytest.raises(ContextError) as info:
        ctx.select(["nope.txt"], pos=POS)
    assert info.value.message == 'file not found in build context: "nope.txt"'
    assert "relative to the root" in info.value.hint
    with pytest.raises(ContextError):
        ctx.select(["a.txt/inner"])  # a file used as a directory


def test_wildcard_without_match(ctx):
    assert ctx.select(["*.nothing"]) == []
    with pytest.raises(ContextError) as info:
        ctx.select(["*.nothing"], allow_missing_wildcard=False, pos=POS)
    assert "matches nothing" in info.value.message


@pytest.mark.parametrize("pattern", ["../x", "../ctx/a.txt", "src/../../x", "/../a.txt"])
def test_dotdot_out_of_context_is_an_error(ctx, pattern):
    with pytest.raises(ContextError) as info:
        ctx.select([pattern], pos=POS)
    assert "outside the build context" in info.value.message
    assert info.value.pos == POS


def test_symlinks(tmp_path: Path):
    outside = make_tree(tmp_path / "outside", {"secret": "s", "d/f": "f"})
    root = make_tree(
        tmp_path / "ctx",
        {
            "real/f.txt": "in",
            "inlink": ("link", "real"),
            "abs_in": ("link", str(tmp_path / "ctx" / "real")),
            "out_rel": ("link", "../outside"),
            "out_abs": ("link", str(outside)),
            "real/up": ("link", "../../outside/d"),
        },
    )
    ctx = BuildContext(root, IgnoreMatcher.empty())
    # an inbound link as a parent component is followed inside the context
    sel = ctx.select(["inlink/f.txt"])
    assert rels(sel) == ["real/f.txt"] and sel[0].logical == "inlink/f.txt"
    assert rels(ctx.select(["abs_in/f.txt"])) == ["real/f.txt"]
    # an outbound link as a parent component is an error, never followed
    for pattern in ["out_rel/secret", "out_abs/secret", "real/up/f", "out_rel/*"]:
        with pytest.raises(ContextError) as info:
            ctx.select([pattern], pos=POS)
        assert "points outside the build context" in info.value.message, pattern
        assert info.value.hint
    # a link that is itself the source is followed (BuildKit's FollowSymlinks), inside the context
    with pytest.raises(ContextError) as info:
        ctx.select(["out_abs"], pos=POS)
    assert "points outside the build context" in info.value.message
    sel = ctx.select(["inlink"])
    assert sel[0].kind == "dir" and sel[0].relpath == "real" and sel[0].name == "inlink"
    # ... unless asked not to (COPY --parents)
    sel = ctx.select(["out_abs"], follow_links=False)
    assert sel[0].kind == "symlink"
    assert [e.kind for e in ctx.walk(sel[0])] == ["symlink"]
    # links found by a walk are reported as links, not followed
    kinds = {e.relpath: e.kind for e in ctx.walk(ctx.select(["real"])[0])}
    assert kinds == {".": "dir", "f.txt": "file", "up": "symlink"}


def test_rootfs_mode_resolves_links_chroot_like(tmp_path: Path):
    rootfs = make_tree(
        tmp_path / "rootfs",
        {"usr/lib/libc.so": "libc", "lib": ("link", "/usr/lib"), "etc/passwd": "root:x:0:0"},
    )
    os.chown(rootfs / "etc/passwd", 123, 456)
    stage = BuildContext.for_rootfs(rootfs)
    assert rels(stage.select(["/lib/libc.so"])) == ["usr/lib/libc.so"]
    assert rels(stage.select(["/../../etc/passwd"])) == ["etc/passwd"]  # clamped like a chroot
    st = os.lstat(rootfs / "etc/passwd")
    assert stage.owner_of(st) == (123, 456)
    as_context = BuildContext(rootfs, IgnoreMatcher.empty())
    assert as_context.owner_of(st) == (0, 0)
    # in a context too, an absolute link target starts again at the root (BuildKit's RootPath),
    # never at the host's root
    assert rels(as_context.select(["lib/libc.so"])) == ["usr/lib/libc.so"]
    os.unlink(rootfs / "usr/lib/libc.so")
    with pytest.raises(ContextError) as info:
        as_context.select(["lib/libc.so"])  # the host's /usr/lib is never looked at
    assert "file not found" in info.value.message
    with pytest.raises(ContextError) as info:
        stage.select(["/nope"])
    assert "stage rootfs" in info.value.message


def test_parents_pivot(ctx):
    sel = ctx.select(["src/./util/x.txt"])[0]
    assert sel.relpath == "src/util/x.txt"
    assert sel.parents_path == "util/x.txt"
    assert ctx.select(["src/util/x.txt"])[0].parents_path == "src/util/x.txt"


def test_ignored_buildfile_and_ignore_file_are_invisible_to_copy(tmp_path: Path):
    # Docker: they are still sent to the daemon, "but the ADD and COPY instructions do not copy them"
    root = make_tree(tmp_path / "ctx", {"Buildfile": "FROM scratch\n", "app.py": "x"})
    (root / ".dockerignore").write_text("Buildfile\n.dockerignore\n")
    ctx = BuildContext(root, IgnoreMatcher.load(root, root / "Buildfile"))
    assert rels(ctx.select(["*"])) == ["app.py"]
    for name in ["Buildfile", ".dockerignore"]:
        with pytest.raises(ContextError):
            ctx.select([name])
