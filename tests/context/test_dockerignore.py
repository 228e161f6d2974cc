"""`.dockerignore` rules, checked against Docker's documented behaviour and moby/patternmatcher."""
from __future__ import annotations

from pathlib import Path

import pathspec
import pytest

from builder.context.dockerignore import IgnoreMatcher, clean_ignore_lines
from builder.errors import ContextError

# (patterns, path, ignored?) — the Dockerfile reference's examples first, then patternmatcher facts.
CASES = [
    # reference: "*/temp*" excludes files/dirs starting with temp one level down
    (["*/temp*"], "somedir/temporary.txt", True),
    (["*/temp*"], "somedir/temp", True),
    (["*/temp*"], "temp.txt", False),
    (["*/temp*"], "a/b/temporary.txt", False),
    # "*/*/temp*" two levels down
    (["*/*/temp*"], "somedir/subdir/temporary.txt", True),
    (["*/*/temp*"], "somedir/temporary.txt", False),
    # "temp?" one character
    (["temp?"], "tempa", True),
    (["temp?"], "tempb", True),
    (["temp?"], "temp", False),
    (["temp?"], "tempab", False),
    # "**/*.go" at any depth, the root included
    (["**/*.go"], "main.go", True),
    (["**/*.go"], "a/b/c/main.go", True),
    (["**/*.go"], "main.gox", False),
    # exceptions, last match wins
    (["*.md", "!README.md"], "README.md", False),
    (["*.md", "!README.md"], "CHANGES.md", True),
    (["*.md", "!README*.md", "README-secret.md"], "README-secret.md", True),
    (["*.md", "!README*.md", "README-secret.md"], "README-other.md", False),
    (["*.md", "README-secret.md", "!README*.md"], "README-secret.md", False),
    # a pattern matching a directory excludes everything under it
    (["dir"], "dir", True),
    (["dir"], "dir/sub/file", True),
    (["dir"], "dirx", False),
    # ... unless a later exception re-includes a path below (gitignore cannot do this)
    (["dir", "!dir/keep"], "dir/keep", False),
    (["dir", "!dir/keep"], "dir/other", True),
    (["dir", "!dir/keep"], "dir/keep/inner", False),
    # * and ? never cross /
    (["*"], "a", True),
    (["*"], "a/b", True),  # via its parent "a"
    (["a*c"], "ab/c", False),
    (["a?c"], "a/c", False),
    # a slash-less pattern is anchored at the root (gitignore would match at any depth)
    (["*.o"], "x.o", True),
    (["*.o"], "sub/x.o", False),
    # ** forms
    (["dir/**"], "dir", False),
    (["dir/**"], "dir/a", True),
    (["dir/**"], "dir/a/b", True),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/b", True),
    (["a/**/b"], "a/x/y/b", True),
    (["a/**/b"], "a/xb", False),
    (["**"], "anything/at/all", True),
    (["**/foo"], "foo", True),
    (["**/foo"], "x/y/foo", True),
    (["**/foo"], "x/barfoo", False),
    (["**foo"], "barfoo", True),  # patternmatcher's suffix fast path quirk
    # character classes and escapes
    (["[a-c].txt"], "b.txt", True),
    (["[a-c].txt"], "d.txt", False),
    (["[^a].txt"], "b.txt", True),
    (["[^a].txt"], "a.txt", False),
    (["\\*"], "*", True),
    (["\\*"], "x", False),
    (["a\\?b"], "a?b", True),
    (["a\\?b"], "axb", False),
    # regexp characters are literal
    (["a.b"], "a.b", True),
    (["a.b"], "axb", False),
    (["f(1)+$"], "f(1)+$", True),
    # cleaning: leading / and ./, trailing /, doubled and dotted segments
    (["/foo"], "foo", True),
    (["./foo"], "foo", True),
    (["foo/"], "foo", True),  # Docker cleans the slash away; a *file* named foo matches too
    (["a//b"], "a/b", True),
    (["a/./b"], "a/b", True),
    (["a/x/../b"], "a/b", True),
    (["!/foo", "foo"], "foo", True),
    # whitespace trimmed; only a # in column 1 is a comment
    (["  spaced  "], "spaced", True),
    (["#comment"], "#comment", False),
    (["  #notcomment"], "#notcomment", True),
    (["!  kept", "*"], "kept", True),  # the exception comes first, so the later * wins
    (["*", "!  kept"], "kept", False),
]


# moby/patternmatcher's own table (TestMatches, MatchesOrParentMatches): pattern, path, matched?
PATTERNMATCHER_TABLE = [
    ("**", "file", True), ("**/", "file", True), ("**", "dir/file", True), ("**/**", "dir/file", True),
    ("dir/**", "dir/file", True), ("dir/**", "dir/dir2/file", True), ("**/dir", "dir", True),
    ("**/dir", "dir/file", True), ("**/dir2/*", "dir/dir2/file", True), ("**/dir2/*", "dir/dir2/file/", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True), ("**file", "file", True), ("**file", "dir/file", True),
    ("**/file", "dir/file", True), ("**file", "dir/dir/file", True), ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file", True), ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True), ("**/file*.txt", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True), ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False), ("**/*.txt", "file.txt", True),
    ("**/**/*.txt", "file.txt", True), ("a**/*.txt", "a/file.txt", True), ("a**/*.txt", "a/dir/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True), ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True), ("a/*.txt**", "a/file.txt", True), ("a[b-d]e", "ae", False),
    ("a[b-d]e", "ace", True), ("a[b-d]e", "aae", False), ("a[^b-d]e", "aze", True), (".*", ".foo", True),
    (".*", "foo", False), ("abc.def", "abcdef", False), ("abc.def", "abc.def", True),
    ("abc.def", "abcZdef", False), ("abc?def", "abcZdef", True), ("abc?def", "abcdef", False),
    ("**/foo/bar", "foo/bar", True), ("**/foo/bar", "dir/foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True), ("abc/**", "abc", False), ("abc/**", "abc/def", True),
    ("abc/**", "abc/def/ghi", True), ("**/.foo", ".foo", True), ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True), ("a(b)c/def", "a(b)c/xyz", False), ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\\\", "a\\", True), ("a\\*b", "a*b", True),
    # Go's filepath.Match table as patternmatcher reuses it
    ("*c", "abc", True), ("a*", "ab/c", True), ("a*/b", "abc/b", True), ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True), ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True), ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[^c]", "abc", False), ("ab[^e-g]", "abc", True), ("a\\*b", "ab", False), ("a?b", "a\u263ab", True),
    ("a[^a]b", "a\u263ab", True), ("a???b", "a\u263ab", False), ("[a-\u03b6]*", "\u03b1", True),
    ("*[a-\u03b6]", "A", False), ("a?b", "a/b", False), ("a*b", "a/b", False), ("[\\]a]", "]", True),
    ("[\\-]", "-", True), ("[x\\-]", "-", True), ("[x\\-]", "z", False), ("[\\-x]", "x", True), ("*x", "xxx", True),
]
MULTI_TABLE = [
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    (["!fileutils.go", "*.go"], "fileutils.go", True),
    (["docs/*", "!docs/README.md"], "docs/README.md", False),
]


@pytest.mark.parametrize("pattern,path,expected", PATTERNMATCHER_TABLE)
def test_patternmatcher_table(pattern, path, expected):
    assert IgnoreMatcher.from_lines([pattern]).ignored(path) is expected


@pytest.mark.parametrize("patterns,path,expected", MULTI_TABLE)
def test_patternmatcher_multi_table(patterns, path, expected):
    assert IgnoreMatcher.from_lines(patterns).ignored(path) is expected


@pytest.mark.parametrize(
    "bad", ["[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "!"]
)
def test_go_bad_patterns(bad):
    with pytest.raises(ContextError):
        IgnoreMatcher.from_lines([bad])


@pytest.mark.parametrize("patterns,path,expected", CASES)
def test_docker_semantics(patterns, path, expected):
    assert IgnoreMatcher.from_lines(patterns).ignored(path) is expected


def test_cleaned_patterns_are_exposed_for_cache_keys():
    lines = ["# comment", "", "  ./a/b/  ", "!/c//d", "\ufeffignored-bom-only-first-line"]
    assert clean_ignore_lines(["\ufeffx", "y"]) == ["x", "y"]
    assert IgnoreMatcher.from_lines(lines).patterns == ("a/b", "!c/d", "\ufeffignored-bom-only-first-line")


def test_root_is_never_ignored():
    matcher = IgnoreMatcher.from_lines(["**", "*"])
    assert matcher.ignored(".") is False
    assert matcher.ignored("") is False


@pytest.mark.parametrize("bad", [["!"], ["[abc"], ["a/[b"]])
def test_invalid_patterns_are_context_errors(bad):
    with pytest.raises(ContextError) as info:
        IgnoreMatcher.from_lines(bad, source="/ctx/.dockerignore")
    assert ".dockerignore" in info.value.render()


def test_bad_pattern_error_points_at_its_line():
    with pytest.raises(ContextError) as info:
        IgnoreMatcher.from_lines(["# c", "ok", "", "bad[", "x"], source="ctx/.dockerignore")
    assert info.value.pos is not None and info.value.pos.line == 4
    assert info.value.pos.file == "ctx/.dockerignore"
    assert "bad[" in info.value.message


def test_may_contain_exceptions_lets_a_walk_skip_dirs():
    matcher = IgnoreMatcher.from_lines(["node_modules", "build", "!build/keep.txt"])
    assert matcher.may_contain_exceptions("node_modules") is False
    assert matcher.ignored_dir_fully("node_modules") is True
    assert matcher.may_contain_exceptions("build") is True
    assert matcher.ignored_dir_fully("build") is False
    # Docker's walk enters an ignored dir only for an exception that spells it out
    wild = IgnoreMatcher.from_lines(["vendor", "!**/*.keep", "!*/sub*", "!vendor/*.keep"])
    assert wild.may_contain_exceptions("vendor") is True  # through `!vendor/*.keep`
    assert wild.may_contain_exceptions("vendorx") is False
    only_wild = IgnoreMatcher.from_lines(["vendor", "!**/*.keep", "!*/sub*"])
    assert only_wild.may_contain_exceptions("vendor") is False
    assert only_wild.ignored_dir_fully("vendor") is True


def test_pathspec_gitignore_differs_where_we_say_it_does():
    """The reasons dockerignore.py does not delegate to pathspec, shown on pathspec itself."""
    git = pathspec.GitIgnoreSpec.from_lines(["*.o"])
    assert git.match_file("sub/x.o") is True  # unanchored in gitignore
    assert IgnoreMatcher.from_lines(["*.o"]).ignored("sub/x.o") is False
    git = pathspec.GitIgnoreSpec.from_lines(["logs/"])
    assert git.match_file("logs") is False  # "directories only" in gitignore
    assert IgnoreMatcher.from_lines(["logs/"]).ignored("logs") is True


def test_load_prefers_buildfile_specific_ignore(tmp_path: Path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / ".dockerignore").write_text("from-context\n")
    buildfile = tmp_path / "files" / "Buildfile"
    buildfile.parent.mkdir()
    buildfile.write_text("FROM scratch\n")
    assert IgnoreMatcher.load(ctx, buildfile).patterns == ("from-context",)
    (buildfile.parent / "Buildfile.dockerignore").write_text("from-buildfile\n")
    loaded = IgnoreMatcher.load(ctx, buildfile)
    assert loaded.patterns == ("from-buildfile",)
    assert loaded.source.endswith("Buildfile.dockerignore")
    assert IgnoreMatcher.load(ctx, None).patterns == ("from-context",)


def test_load_without_any_ignore_file(tmp_path: Path):
    matcher = IgnoreMatcher.load(tmp_path, tmp_path / "Buildfile")
    assert not matcher
    assert matcher.ignored("anything") is False
