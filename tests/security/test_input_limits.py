"""Issue 10, item 11: the memory planning takes is bounded whatever the Buildfile.

Before, one 10 MB line took 1.7 GB to plan: the lexer's regular expressions kept a
backtracking record per character of a word. Now a physical line is limited to 65535 bytes
(BuildKit's limit), the whole Buildfile to 1 MiB, and the grammar's repeated groups never
backtrack. Measured in a child process as the growth of its peak RSS (ru_maxrss) across the
call, after imports and the grammar are loaded.
"""
from __future__ import annotations

import json

from ._input_helpers import run_snippet

# Refused after reading at most 1 MiB + 1 byte: decoding and splitting that prefix hold a few
# copies of it. 64 MB is an order of magnitude of headroom over that, and 25x under the old cost.
REFUSED_BOUND_MB = 64
# The largest accepted single instruction (1 MiB, one word joined from continuation lines):
# the text, the joined logical line, the token and the AST value, a few MB; the old lexer
# needed ~170 bytes per character (~180 MB) for it.
ACCEPTED_WORD_BOUND_MB = 64


def _peak_growth_mb(buildfile: str, tmp_path) -> dict:
    (tmp_path / "Buildfile").write_text(buildfile)
    out = run_snippet(
        f"""
        import json, resource
        from builder import api
        from builder.errors import BuildError
        from builder.parse.grammar import get_parser
        get_parser()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            api.plan({str(tmp_path)!r})
            error = None
        except BuildError as failure:
            error = failure.render()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"growth_mb": (after - before) / 1024, "error": error}}))
        """,
        timeout=120,
    )
    return json.loads(out.strip().splitlines()[-1])


def test_planning_a_ten_megabyte_line_stays_small(tmp_path):
    result = _peak_growth_mb("FROM scratch\nLABEL a=" + "b" * (10 << 20) + "\n", tmp_path)
    assert result["error"] is not None and "longer than 65535 bytes" in result["error"]
    assert result["growth_mb"] < REFUSED_BOUND_MB


def test_planning_the_largest_accepted_word_stays_small(tmp_path):
    chunk = "b" * 60000
    lines = (1 << 20) // (len(chunk) + 2) - 1
    buildfile = "FROM scratch\nLABEL a=" + (chunk + "\\\n") * lines + "c\n"
    result = _peak_growth_mb(buildfile, tmp_path)
    assert result["error"] is None, result["error"]
    assert result["growth_mb"] < ACCEPTED_WORD_BOUND_MB
