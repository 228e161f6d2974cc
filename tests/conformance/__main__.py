"""Run the conformance cases against dockerd's BuildKit and print the table.

    sudo /tmp/bvenv/bin/python -m tests.conformance [--only a,b] [--verbose] [--work DIR]

Run from the repository root (the builder imported is this checkout's). Exit status: 0 when every
case is identical or differs only as known_differences.toml lists, 1 otherwise, 2 when it cannot
run here (not root, no dockerd: start it with /work/shared/anchors/start-dockerd.sh).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .cases import CASES
from .known import classify, load_known
from .report import Row, explain, summary, table
from .runner import Workbench, docker_server_version, unavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--verbose", "-v", action="store_true", help="list every difference, history too")
    parser.add_argument("--work", type=Path, help="work dir, new or empty, kept after the run; default a temp dir")
    args = parser.parse_args(argv)
    cases = CASES
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {case.name for case in CASES})
        if unknown:
            parser.error(f"no such cases: {', '.join(unknown)}")
        cases = tuple(case for case in CASES if case.name in wanted)
    reason = unavailable()
    if reason is not None:
        print(f"conformance suite skipped: {reason}", file=sys.stderr)
        return 2
    known = load_known()
    work = args.work or Path(tempfile.mkdtemp(prefix="conformance-"))
    started = time.monotonic()
    bench = Workbench.prepare(work)
    rows: list[Row] = []
    try:
        for case in cases:
            result = bench.run(case, retry_if=lambda r, name=case.name: bool(classify(name, r.differences,
                                                                                        known).unexpected))
            row = Row(result, classify(case.name, result.differences, known, compared=result.compared))
            rows.append(row)
            if args.verbose:
                print(explain(row), flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    import builder

    print(f"\nours ({Path(builder.__file__).parent}) against BuildKit in dockerd {docker_server_version()}, "
          f"{time.monotonic() - started:.0f} s\n")
    print(table(rows))
    print(f"\n{summary(rows)}")
    return 1 if any(row.verdict.unexpected and not row.reference_fault for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
