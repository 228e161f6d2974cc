"""Each case built by us and by BuildKit gives the same image, or differs only as listed.

Skipped (with the reason) without root or without a dockerd to talk to, as in CI; locally:
/work/shared/anchors/start-dockerd.sh, then run this file. docs/CONFORMANCE.md explains.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from .cases import CASES, Case
from .known import classify, load_known
from .report import Row, explain
from .runner import Workbench, unavailable

KNOWN = load_known()


@pytest.fixture(scope="module")
def workbench(tmp_path_factory: pytest.TempPathFactory) -> Workbench:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    return Workbench.prepare(Path(tmp_path_factory.mktemp("conformance")))


@pytest.mark.root
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_same_image_as_buildkit(case: Case, workbench: Workbench) -> None:
    result = workbench.run(case, retry_if=lambda r: bool(classify(case.name, r.differences, KNOWN).unexpected))
    row = Row(result, classify(case.name, result.differences, KNOWN, compared=result.compared))
    if row.reference_fault:
        pytest.skip(f"no verdict: dockerd's BuildKit misbehaved in all {result.attempts} builds "
                    f"({row.verdict.unexpected[0].describe()[:200]}); see docs/CONFORMANCE.md")
    for entry in row.verdict.stale:
        warnings.warn(f"{case.name}: known difference {entry.id!r} no longer seen; remove it from "
                      "known_differences.toml and docs/CONFORMANCE.md if the fix has landed", stacklevel=1)
    assert not row.verdict.unexpected, (
        "differences not listed in tests/conformance/known_differences.toml:\n" + explain(row))
