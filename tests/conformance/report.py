"""The table the script prints, and the readable diff a failing test shows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .known import Verdict
from .runner import CaseResult, is_reference_fault


@dataclass
class Row:
    result: CaseResult
    verdict: Verdict

    @property
    def reference_fault(self) -> bool:
        """Every unlisted difference is dockerd's BuildKit misbehaving (in each attempt): no verdict."""
        unexpected = self.verdict.unexpected
        return bool(unexpected) and all(is_reference_fault(d) for d in unexpected)


def status(row: Row) -> str:
    if row.reference_fault:
        return "BuildKit fault"
    if row.verdict.unexpected:
        return "NO"
    return "yes" if row.verdict.identical else "known"


def _labels(verdict: Verdict) -> str:
    labels = dict.fromkeys(entry.label() for _, entry in verdict.expected)
    return ", ".join(labels)


def table(rows: Sequence[Row]) -> str:
    """One line per case: identical? (yes; known: only listed differences; NO; BuildKit fault: the
    reference misbehaved in every attempt), the differences."""
    lines = ["| case | identical | differences | known (why) | history | notes |",
             "| --- | --- | --- | --- | ---: | --- |"]
    for row in rows:
        verdict = row.verdict
        unexpected = "; ".join(f"{d.where} {d.attribute}" for d in verdict.unexpected)
        known = f"{len(verdict.expected)} ({_labels(verdict)})" if verdict.expected else ""
        notes = [row.result.note] if row.result.note else []
        notes += [f"stale entry {entry.id}" for entry in verdict.stale]
        lines.append(f"| {row.result.name} | {status(row)} | {unexpected} | {known} | "
                     f"{len(row.result.history)} | {'; '.join(notes)} |")
    return "\n".join(lines)


def summary(rows: Sequence[Row]) -> str:
    counts = {"yes": 0, "known": 0, "NO": 0, "BuildKit fault": 0}
    for row in rows:
        counts[status(row)] += 1
    text = (f"{len(rows)} case{'s' if len(rows) != 1 else ''}: {counts['yes']} identical, {counts['known']} differ only as listed in "
            f"known_differences.toml, {counts['NO']} differ otherwise")
    if counts["BuildKit fault"]:
        text += (f"; {counts['BuildKit fault']} without a verdict (dockerd's BuildKit failed in every attempt: "
                 "see docs/CONFORMANCE.md, 'When BuildKit misbehaves')")
    return text


def explain(row: Row) -> str:
    """Every difference of one case, unexpected first, for a failing test or --verbose."""
    lines = [f"{row.result.name}:"]
    lines += [f"  NOT LISTED  {d.describe()}" for d in row.verdict.unexpected]
    lines += [f"  listed ({entry.id})  {d.describe()}" for d, entry in row.verdict.expected]
    lines += [f"  history     {d.describe()}" for d in row.result.history]
    lines += [f"  BuildKit attempt {n}: {text}" for n, text in enumerate(row.result.earlier, start=1)]
    lines += [f"  stale entry {entry.id}: listed for this case, not seen" for entry in row.verdict.stale]
    return "\n".join(lines)
