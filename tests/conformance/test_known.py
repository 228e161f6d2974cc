"""known_differences.toml is well formed, names real cases, and docs/CONFORMANCE.md mirrors it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from .cases import CASES
from .compare import Difference
from .known import Known, classify, load_known
from .runner import is_reference_fault

DOCS = Path(__file__).resolve().parents[2] / "docs" / "CONFORMANCE.md"


def test_every_entry_names_existing_cases() -> None:
    names = {case.name for case in CASES}
    for entry in load_known():
        assert set(entry.cases) <= names, f"{entry.id} names unknown cases {set(entry.cases) - names}"


def test_docs_list_every_entry_and_no_other() -> None:
    """The docs' table rows start with the entry's id in backquotes: the two lists stay in step."""
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", DOCS.read_text(), flags=re.MULTILINE))
    assert listed == {entry.id for entry in load_known()}


def test_case_names_are_unique_and_usable_as_docker_tags() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) for name in names)


ENTRY = Known(id="x", kind="issue", item="2", cases=("c",), where=("/mnt/**", "config.Env"), reason="r",
              attributes=("presence", "value"))


def test_classify_separates_listed_unlisted_and_stale() -> None:
    listed = Difference("/mnt/a", "presence", "absent", "dir")
    other_attribute = Difference("/mnt", "mode", "0755", "0700")
    other_path = Difference("/mntx", "presence", "absent", "dir")
    verdict = classify("c", [listed, other_attribute, other_path], [ENTRY])
    assert verdict.expected == [(listed, ENTRY)]
    assert verdict.unexpected == [other_attribute, other_path]
    assert classify("c", [], [ENTRY]).stale == [ENTRY]
    assert classify("other-case", [listed], [ENTRY]).unexpected == [listed]


def test_a_malformed_entry_fails_loudly(tmp_path: Path) -> None:
    bad = tmp_path / "k.toml"
    bad.write_text('[[difference]]\nid = "a"\nkind = "issue"\ncases = ["c"]\nwhere = ["build"]\nreason = "r"\n')
    with pytest.raises(ValueError, match="names its item"):
        load_known(bad)
    bad.write_text('[[difference]]\nid = "a"\nkind = "typo"\ncases = ["c"]\nwhere = ["build"]\nreason = "r"\n')
    with pytest.raises(ValueError, match="kind"):
        load_known(bad)


def test_reference_faults_are_told_from_differences() -> None:
    """Only BuildKit losing its own files counts as a fault of the reference, never a real refusal."""
    def refused(message: str) -> Difference:
        return Difference("build", "result", "built", "refused: " + message)

    assert is_reference_fault(refused('#5 0.1 runc run failed: unable to start container process: exec: "/bin/sh": '
                                      "stat /bin/sh: no such file or directory"))
    assert is_reference_fault(refused("#8 ERROR: lstat /var/lib/docker/tmp/buildkit-mount17/src: no such file or "
                                      "directory"))
    assert is_reference_fault(Difference("/etc/hosts", "presence", "absent", "file 0755 0:0 0B"))
    assert is_reference_fault(Difference("/run/secrets/token", "presence", "absent", "file 0755 0:0 0B"))
    assert not is_reference_fault(Difference("/run/secrets/a/b", "presence", "absent", "file 0755 0:0 0B"))
    assert not is_reference_fault(refused("executor failed running [/bin/sh -c test -f /x]: exit code: 1"))
    assert not is_reference_fault(refused('failed to compute cache key: "/missing" not found: not found'))
    assert not is_reference_fault(Difference("build", "result", "refused: x", "built"))
    assert not is_reference_fault(Difference("/etc/hosts", "presence", "file 0644 0:0 10B", "absent"))
    assert not is_reference_fault(Difference("/etc/hosts", "sha256", "a", "b"))
