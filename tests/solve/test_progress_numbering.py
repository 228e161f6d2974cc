"""Step numbers follow the Buildfile, not the clock: two parallel stages finishing in opposite
orders number every step alike, and plain output prefixes each line with its step's `#N`."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from builder.errors import RunError
from builder.image.store import Store
from builder.progress import EventKind, PlainProgress

from .fake import FakeExecutor, build

# Stage a waits for "A", stage b for "B"; the test releases one, and the other when the first is done.
TEXT = """\
FROM scratch AS a
RUN say a-running
RUN wait A
RUN write /a one
FROM scratch AS b
RUN say b-running
RUN wait B
RUN write /b two
FROM scratch
COPY --from=a /a /a
COPY --from=b /b /b
"""

HEADER = re.compile(r"^#(\d+) (\[[^\]]+\] .*)$")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


def _run(store: Store, tmp_path: Path, first: str, second: str, **options) -> str:
    executor = FakeExecutor()
    out = io.StringIO()
    plain = PlainProgress(out)

    def on_event(event) -> None:
        plain(event)
        if event.kind is EventKind.STEP_DONE and event.text == f"RUN write /{first.lower()} " + (
                "one" if first == "A" else "two"):
            executor.post(second)

    executor.post(first)
    build(store, TEXT, executor, tmp_path, on_event=on_event, **options)
    return out.getvalue()


def _numbers(output: str) -> dict[str, int]:
    found = {}
    for line in output.splitlines():
        match = HEADER.match(line)
        if match:
            found[match.group(2)] = int(match.group(1))
    return found


def test_numbers_follow_the_buildfile_whichever_stage_finishes_first(store, tmp_path) -> None:
    a_first = _run(store, tmp_path, "A", "B", no_cache=True)
    b_first = _run(store, tmp_path, "B", "A", no_cache=True)
    # The two runs really went in opposite orders...
    assert a_first.index("[a 4/4] RUN write /a one") < a_first.index("[b 4/4] RUN write /b two")
    assert b_first.index("[b 4/4] RUN write /b two") < b_first.index("[a 4/4] RUN write /a one")
    # ...and numbered every step alike, in Buildfile order.
    assert _numbers(a_first) == _numbers(b_first) == {
        "[a 1/4] FROM scratch AS a": 1, "[a 2/4] RUN say a-running": 2, "[a 3/4] RUN wait A": 3,
        "[a 4/4] RUN write /a one": 4,
        "[b 1/4] FROM scratch AS b": 5, "[b 2/4] RUN say b-running": 6, "[b 3/4] RUN wait B": 7,
        "[b 4/4] RUN write /b two": 8,
        "[stage-2 1/3] FROM scratch": 9, "[stage-2 2/3] COPY --from=a /a /a": 10,
        "[stage-2 3/3] COPY --from=b /b /b": 11,
    }


def test_every_plain_line_carries_its_step_number(store, tmp_path) -> None:
    output = _run(store, tmp_path, "B", "A")
    lines = [line for line in output.splitlines() if line]
    assert lines and all(re.match(r"#\d+ ", line) for line in lines), output
    assert re.search(r"^#2 \d+\.\d{3} a-running$", output, re.MULTILINE)
    assert re.search(r"^#6 \d+\.\d{3} b-running$", output, re.MULTILINE)
    assert re.search(r"^#3 DONE \d+\.\ds$", output, re.MULTILINE)
    # Again, from the cache: the same numbers, each step CACHED.
    again = _run(store, tmp_path, "A", "B")
    assert _numbers(again) == _numbers(output)
    for number in (2, 3, 4, 6, 7, 8, 10, 11):
        assert f"\n#{number} CACHED\n" in again


def test_a_failed_step_says_error_and_the_stopped_one_says_cancelled(store, tmp_path) -> None:
    text = "FROM scratch AS a\nRUN block\nFROM scratch AS b\nRUN fail 3\nFROM scratch\nCOPY --from=a / /\nCOPY --from=b / /\n"
    executor = FakeExecutor()
    out = io.StringIO()
    plain = PlainProgress(out)

    def on_event(event) -> None:
        if event.kind is EventKind.STEP_START and event.text == "RUN fail 3":
            assert executor.blocked.wait(10)  # stage a is inside its RUN when b fails
        plain(event)

    with pytest.raises(RunError):
        build(store, text, executor, tmp_path, on_event=on_event)
    output = out.getvalue()
    assert "#4 ERROR: RUN failed with exit code 3\n" in output
    assert "#2 ERROR: cancelled\n" in output


def test_output_events_carry_whole_lines_and_the_step_number(store, tmp_path) -> None:
    text = "FROM scratch\nRUN <<EOF\nemit one-a\nemit one-b\\ntwo\\nthr\nemit ee\nEOF\n"
    events = []
    build(store, text, FakeExecutor(), tmp_path, on_event=events.append)
    output = [event for event in events if event.kind is EventKind.STEP_OUTPUT]
    assert [(event.step, event.stage, event.text) for event in output] == [
        (2, "stage-0", "one-aone-b\ntwo\n"), (2, "stage-0", "three\n")]
