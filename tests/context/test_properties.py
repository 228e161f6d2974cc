"""Property tests: the digest depends on what a tree holds, never on how or when it was made."""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from builder.context.dockerignore import IgnoreMatcher
from builder.context.tree import BuildContext, content_digest

names = st.sampled_from(["a", "b", "c.txt", "d.md", "e"])
paths = st.lists(names, min_size=1, max_size=3).map("/".join)
files = st.dictionaries(
    paths, st.tuples(st.binary(max_size=32), st.sampled_from([0o644, 0o755, 0o600])), min_size=1, max_size=8
)


def build(root: Path, spec: dict, order_seed: int) -> bool:
    items = list(spec.items())
    random.Random(order_seed).shuffle(items)
    for rel, (data, mode) in items:
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                return False
            path.write_bytes(data)
            os.chmod(path, mode)
        except (NotADirectoryError, FileExistsError, IsADirectoryError):
            return False  # a path used both as a file and a dir: not a tree
    return True


@settings(max_examples=40, deadline=None)
@given(files, st.integers(0, 1000), st.integers(0, 1000), st.sampled_from(["", "*.md", "a", "**/e\n!a/e"]))
def test_digest_ignores_creation_order_and_location(spec, seed1, seed2, ignore_text):
    with tempfile.TemporaryDirectory() as tmp:
        one, two = Path(tmp) / "one", Path(tmp) / "two"
        one.mkdir()
        two.mkdir()
        if not (build(one, spec, seed1) and build(two, spec, seed2)):
            return
        ignore = IgnoreMatcher.from_lines(ignore_text.splitlines())
        first = content_digest(BuildContext(one, ignore).select(["."]))
        second = content_digest(BuildContext(two, ignore).select(["."]))
        assert first == second
        # change one visible file's content: the digest must move
        ctx = BuildContext(one, ignore)
        visible = [e for e in ctx.walk(ctx.select(["."])[0]) if e.kind == "file"]
        if visible:
            target = visible[0].path
            target.write_bytes(target.read_bytes() + b"!")
            assert content_digest(BuildContext(one, ignore).select(["."])) != first
        shutil.rmtree(one)
