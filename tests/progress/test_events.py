"""rawjson against the schema documented in docs/PROGRESS.md, byte progress rate limits, and the
plain renderer's transfer lines."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from builder.cli import main as cli_main
from builder.progress import SCHEMA_VERSION, Event, EventKind, PlainProgress, Transfer

REPO = Path(__file__).resolve().parents[2]
TYPES = {"integer": int, "number": (int, float), "string": str}


def _documented() -> tuple[dict[str, type], set[str]]:
    """The fields (name -> type) and kinds of docs/PROGRESS.md's rawjson tables."""
    text = (REPO / "docs" / "PROGRESS.md").read_text()
    schema = text[text.index("## rawjson"):]
    fields, kinds = {}, set()
    for name, second in re.findall(r"^\| `([a-z_-]+)` \| ([^|]+) \|", schema, re.MULTILINE):
        if second.strip() in TYPES:
            fields[name] = TYPES[second.strip()]
        else:
            kinds.add(name)
    return fields, kinds


def test_the_documented_kinds_are_exactly_the_event_kinds() -> None:
    _, kinds = _documented()
    assert kinds == {kind.value for kind in EventKind}


@pytest.mark.parametrize("mode", ["rawjson", "json"])
def test_rawjson_lines_follow_the_documented_schema(tmp_path, capsys, mode) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a.txt").write_text("a\n")
    (context / "Buildfile").write_text("FROM scratch AS base\nCOPY a.txt /a\nFROM base\nENV B=1\n")
    code = cli_main(["--root", str(tmp_path / "store"), "build", "--progress", mode, "-t", "json:1",
                     "-o", f"type=oci,dest={tmp_path / 'out.tar'}", str(context)])
    assert code == 0
    fields, kinds = _documented()
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert records
    for record in records:
        assert set(record) == set(fields), record
        for name, value in record.items():
            assert isinstance(value, fields[name]) and not isinstance(value, bool), (name, record)
        assert record["v"] == SCHEMA_VERSION == 1 and record["kind"] in kinds
    by_kind = [record["kind"] for record in records]
    assert by_kind[0] == "build-start" and by_kind[-1] == "build-done"
    assert records[0]["total"] == 5  # four steps and one export
    starts = [(r["step"], r["stage"], r["stage_step"], r["stage_steps"], r["text"]) for r in records
              if r["kind"] == "step-start"]
    assert starts == [(1, "base", 1, 2, "FROM scratch AS base"), (2, "base", 2, 2, "COPY a.txt /a"),
                      (3, "stage-1", 1, 2, "FROM base"), (4, "stage-1", 2, 2, "ENV B=1")]
    export = [r for r in records if r["kind"] in ("export-start", "export-done")]
    assert [(r["kind"], r["step"]) for r in export] == [("export-start", 5), ("export-done", 5)]
    assert export[1]["id"].startswith("sha256:")
    written = [r for r in records if r["kind"] == "progress" and r["step"] == 5]
    assert written[-1]["current"] == written[-1]["total"] == (tmp_path / "out.tar").stat().st_size
    done = records[-1]
    assert done["id"].startswith("sha256:") and "named json:1" in done["text"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_byte_progress_is_rate_limited_per_item_and_always_ends() -> None:
    clock, seen = Clock(), []
    transfer = Transfer(seen.append, step=3, id="sha256:x", text="sha256:x", total=10_000_000, clock=clock)
    for _ in range(10_000):  # 10,000 chunks of 1,000 bytes over 2 seconds
        clock.now += 0.0002
        transfer.advance(1000)
    transfer.finish()
    assert 20 <= len(seen) <= 22, "about ten a second, and the end"
    assert all(event.kind is EventKind.PROGRESS and event.step == 3 for event in seen)
    currents = [event.current for event in seen]
    assert currents == sorted(currents) and currents[-1] == 10_000_000


def test_a_small_copy_stays_silent_and_a_large_one_is_shown() -> None:
    clock, seen = Clock(), []
    small = Transfer(seen.append, step=1, id="files", text="copying files", threshold=1000, clock=clock)
    small.advance(999)
    small.finish()
    assert seen == []
    large = Transfer(seen.append, step=1, id="files", text="copying files", threshold=1000, clock=clock)
    large.advance(600)
    large.advance(600)
    large.finish()
    assert [event.current for event in seen] == [1200, 1200]


def test_plain_shows_a_transfer_once_a_second_and_its_end() -> None:
    clock, out = Clock(), io.StringIO()
    plain = PlainProgress(out, clock=clock)
    plain(Event(EventKind.STEP_START, "app", 2, 2, "FROM x", stage_step=1, stage_steps=1))
    for tenth in range(1, 26):
        clock.now = tenth / 10
        plain(Event(EventKind.PROGRESS, step=2, id="sha256:a", text="sha256:a", current=tenth * 100_000,
                    total=2_500_000))
    assert out.getvalue().splitlines() == [
        "#2 [app 1/1] FROM x",
        "#2 sha256:a 1.1MB / 2.5MB 1.1s",
        "#2 sha256:a 2.1MB / 2.5MB 2.1s",
        "#2 sha256:a 2.5MB / 2.5MB 2.5s done",
    ]


def test_a_large_copy_reports_its_bytes_and_a_small_one_does_not(tmp_path, monkeypatch) -> None:
    import builder
    from builder.solve import copystep

    monkeypatch.setattr(copystep, "LARGE_COPY_BYTES", 1_000_000)
    context = tmp_path / "ctx"
    (context / "big").mkdir(parents=True)
    for index in range(3):
        (context / "big" / f"part{index}").write_bytes(b"x" * 700_000)
    (context / "small.txt").write_text("small\n")
    events = []
    builder.build(context, buildfile_text="FROM scratch\nCOPY small.txt /\nCOPY big /big\n", root=tmp_path / "store",
                  on_event=events.append)
    progress = [event for event in events if event.kind is EventKind.PROGRESS]
    assert progress and {(event.step, event.id, event.text) for event in progress} == {(3, "files", "copying files")}
    assert {event.total for event in progress[:-1]} == {0}, "the total is not known ahead"
    assert progress[-1].current == progress[-1].total == 2_100_000, "the last event says it is complete"


def test_the_cli_offers_every_progress_mode() -> None:
    from builder.cli import build_parser
    from builder.display import PROGRESS_MODES

    parser, subparsers = build_parser(only_build=True)
    build = subparsers.choices["build"]
    progress = next(action for action in build._actions if "--progress" in action.option_strings)
    assert tuple(progress.choices) == PROGRESS_MODES


def test_a_failed_export_ends_its_own_numbered_lines_with_an_error(tmp_path, capsys) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Buildfile").write_text("FROM scratch\nENV A=1\n")
    in_the_way = tmp_path / "out.tar"
    in_the_way.mkdir()
    code = cli_main(["--root", str(tmp_path / "store"), "build", "--progress", "plain",
                     "-o", f"type=oci,dest={in_the_way}", str(context)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"#3 exporting to oci image layout {in_the_way}\n" in err
    assert f"#3 ERROR: output {in_the_way} is a directory, but a file is to be written there\n" in err
