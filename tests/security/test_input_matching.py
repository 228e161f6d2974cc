"""Issue 10, item 9: user patterns never meet a backtracking matcher.

A `.dockerignore` line, a COPY source wildcard and the shell pattern of `${V#p}` used to become
Python regular expressions; nested stars then took exponential time on a long name (89 s for
one ignore line, 20 s for one substitution). Each reproducer runs in a child process with a
timeout, so the old behaviour fails the test instead of hanging CI, and must finish in well
under 2 s (a test of complexity: the inputs are sized so the old code needs minutes).
"""
from __future__ import annotations

import json

from ._input_helpers import run_snippet

BOUND_SECONDS = 2.0
HANG_TIMEOUT = 30  # the old code needs far longer; past this the child is killed and the test fails


def _timed(code: str) -> dict:
    out = run_snippet(
        """
        import json, time
        start = time.perf_counter()
        """
        + code
        + """
        print(json.dumps({"seconds": time.perf_counter() - start, "result": result}))
        """,
        timeout=HANG_TIMEOUT,
    )
    return json.loads(out.strip().splitlines()[-1])


def test_dockerignore_nested_double_stars_on_a_deep_path():
    done = _timed(
        """
        from builder.context.dockerignore import IgnoreMatcher
        matcher = IgnoreMatcher.from_lines(["a/**/**/**/**/**/**/**/**/**/b"])
        deep = "a/" + "x/" * 60 + "c"
        result = [matcher.ignored(deep), matcher.ignored("a/" + "x/" * 60 + "b"), matcher.ignored("a/b")]
        """
    )
    assert done["result"] == [False, True, True]
    assert done["seconds"] < BOUND_SECONDS


def test_dockerignore_pattern_reaches_the_walk_of_a_real_context(tmp_path):
    """The same pattern through BuildContext.visible, as COPY . meets it."""
    deep = tmp_path.joinpath("a", *(["x"] * 40))
    deep.mkdir(parents=True)
    (deep / "c").write_text("kept")
    (deep / "b").write_text("ignored")
    (tmp_path / ".dockerignore").write_text("a/**/**/**/**/**/**/**/**/**/b\n")
    done = _timed(
        f"""
        from pathlib import Path
        from builder.context.tree import BuildContext
        from builder.context.dockerignore import IgnoreMatcher
        root = Path({str(tmp_path)!r})
        context = BuildContext(root, IgnoreMatcher.load(root, None))
        base = "a/" + "x/" * 40
        result = [context.visible(base + "c"), context.visible(base + "b")]
        """
    )
    assert done["result"] == [True, False]
    assert done["seconds"] < BOUND_SECONDS


def test_substitution_pattern_with_many_stars():
    done = _timed(
        """
        from builder.parse.expand import expand_word
        env = {"V": "a" * 60}
        result = [
            expand_word("${V#*a*a*a*a*a*a*a*a*a*a*a*b}", env),
            expand_word("${V%%*a*a*a*a*a*a*a*a*a*a*a*b}", env),
            expand_word("${V//*a*a*a*a*a*a*a*a*a*a*a*b/x}", env),
            expand_word("${V##*a*a*a}", env),
        ]
        """
    )
    assert done["result"] == ["a" * 60, "a" * 60, "a" * 60, ""]
    assert done["seconds"] < BOUND_SECONDS


def test_copy_source_wildcard_with_many_stars(tmp_path):
    (tmp_path / ("a" * 200)).write_text("long name")
    (tmp_path / "ab").write_text("short name")
    done = _timed(
        f"""
        from pathlib import Path
        from builder.context.tree import BuildContext
        context = BuildContext(Path({str(tmp_path)!r}))
        result = [s.relpath for s in context.select(["*a*a*a*a*a*a*a*a*a*a*b", "*a*b"])]
        """
    )
    assert done["result"] == ["ab"]
    assert done["seconds"] < BOUND_SECONDS
