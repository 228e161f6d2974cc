"""The known differences (known_differences.toml): which differences a case may show, and why.

Each entry names the cases, where the difference is (`config.<Field>`, `build`, or a path; a path
ending in `/**` covers that path and everything below it), optionally which attributes, and why.
Kinds:
  issue           a behaviour issue 13 lists (`item`); the entry goes when the fix lands
  buildkit-20.10  a bug of the BuildKit in dockerd 20.10 that we do not copy (we follow current BuildKit)
  on-purpose      a difference we keep, with the reason
  finding         found by this suite and not named in the issue; to be decided
docs/CONFORMANCE.md lists every entry by its id (tests/conformance/test_known.py keeps the two in step).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .compare import Difference

KNOWN_FILE = Path(__file__).with_name("known_differences.toml")
KINDS = ("issue", "buildkit-20.10", "on-purpose", "finding")
_KEYS = {"id", "kind", "item", "cases", "where", "attributes", "reason", "flaky"}


@dataclass(frozen=True)
class Known:
    id: str
    kind: str
    cases: tuple[str, ...]
    where: tuple[str, ...]
    reason: str
    item: str = ""
    attributes: tuple[str, ...] = ()  # empty: any attribute
    flaky: bool = False  # BuildKit shows it only sometimes: never reported as stale

    def covers(self, case: str, difference: Difference) -> bool:
        if case not in self.cases:
            return False
        if self.attributes and difference.attribute not in self.attributes:
            return False
        return any(_where_matches(pattern, difference.where) for pattern in self.where)

    def label(self) -> str:
        return f"item {self.item}" if self.kind == "issue" else self.kind


def _where_matches(pattern: str, where: str) -> bool:
    if pattern.endswith("/**"):
        root = pattern[: -len("/**")]
        return where == root or where.startswith(root + "/")
    return pattern == where


def load_known(path: Path = KNOWN_FILE) -> list[Known]:
    """The entries, checked: a typo in the file must fail loudly, not tolerate nothing."""
    data = tomllib.loads(path.read_text())
    entries: list[Known] = []
    for index, raw in enumerate(data.get("difference", [])):
        entries.append(_entry(raw, f"{path.name}: difference #{index + 1}"))
    ids = [entry.id for entry in entries]
    duplicates = sorted({name for name in ids if ids.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path.name}: duplicate ids {duplicates}")
    return entries


def _entry(raw: dict[str, Any], where: str) -> Known:
    unknown = set(raw) - _KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("id", "kind", "cases", "where", "reason"):
        if not raw.get(key):
            raise ValueError(f"{where}: {key} is missing or empty")
    if raw["kind"] not in KINDS:
        raise ValueError(f"{where}: kind {raw['kind']!r} is not one of {KINDS}")
    if raw["kind"] == "issue" and not raw.get("item"):
        raise ValueError(f"{where}: an issue entry names its item")
    return Known(id=raw["id"], kind=raw["kind"], cases=tuple(raw["cases"]), where=tuple(raw["where"]),
                 reason=" ".join(raw["reason"].split()), item=str(raw.get("item", "")),
                 attributes=tuple(raw.get("attributes", ())), flaky=bool(raw.get("flaky", False)))


@dataclass
class Verdict:
    unexpected: list[Difference] = field(default_factory=list)
    expected: list[tuple[Difference, Known]] = field(default_factory=list)
    stale: list[Known] = field(default_factory=list)  # listed for the case, not seen: remove them

    @property
    def identical(self) -> bool:
        return not self.unexpected and not self.expected


def classify(case: str, differences: Sequence[Difference], known: Sequence[Known], *,
             compared: bool = True) -> Verdict:
    """Sort `differences` into listed and not; `compared`: the images were compared (both builders
    built), so an entry for the case that matched nothing is stale."""
    verdict = Verdict()
    used: set[str] = set()
    for difference in differences:
        entry = next((k for k in known if k.covers(case, difference)), None)
        if entry is None:
            verdict.unexpected.append(difference)
        else:
            verdict.expected.append((difference, entry))
            used.add(entry.id)
    if compared:
        verdict.stale = [k for k in known if case in k.cases and k.id not in used and not k.flaky]
    return verdict
