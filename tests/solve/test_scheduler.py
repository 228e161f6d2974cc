"""The scheduler and the step cache, with a fake executor and a temp store: no root needed.

Hits and misses per input, chain invalidation, parallel stages, failures, and the size of the
cache as a Buildfile grows.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from builder.errors import BuildError, RunError
from builder.image.store import Store
from builder.solve.state import DEFAULT_PATH

from .fake import FakeExecutor, build

BASE = "FROM scratch\n"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


def test_a_second_build_takes_every_step_from_the_cache(store, tmp_path) -> None:
    text = BASE + "ENV A=1\nRUN write /a one\nLABEL l=x\nRUN env A /seen\nCMD [\"run\"]\n"
    executor = FakeExecutor()
    first = build(store, text, executor, tmp_path)
    assert first.cached() == [False] * 5
    second = build(store, text, executor, tmp_path)
    assert second.cached() == [True] * 5
    assert len(executor.runs) == 2, "cached RUN steps must not run again"
    assert second.manifest_digest == first.manifest_digest
    assert second.config["config"] == first.config["config"] == {
        "Env": [f"PATH={DEFAULT_PATH}", "A=1"], "WorkingDir": "/", "Labels": {"l": "x"}, "Cmd": ["run"],
        "ArgsEscaped": True}


def test_a_changed_step_reruns_with_everything_after_it(store, tmp_path) -> None:
    executor = FakeExecutor()
    build(store, BASE + "RUN write /a one\nENV B=1\nRUN write /c three\n", executor, tmp_path)
    again = build(store, BASE + "RUN write /a one\nENV B=2\nRUN write /c three\n", executor, tmp_path)
    assert again.cached() == [True, False, False]
    assert "the instruction changed" in again.steps[2].cache_reason
    assert "a previous step or the base image changed" in again.steps[3].cache_reason


def test_an_arg_counts_where_it_is_used_not_where_it_is_declared(store, tmp_path) -> None:
    # ARG itself and a step that does not read it stay cached; a RUN sees ARGs in its environment.
    text = BASE + "ARG V\nLABEL plain=x\nRUN env V /v\n"
    executor = FakeExecutor()
    build(store, text, executor, tmp_path, build_args={"V": "1"})
    again = build(store, text, executor, tmp_path, build_args={"V": "2"})
    assert again.cached() == [True, True, False]
    assert again.steps[3].cache_reason == "variables changed: V"


def test_a_run_cached_by_a_builder_that_ran_it_differently_reruns(store, tmp_path, monkeypatch) -> None:
    from builder.solve import runstep

    text = BASE + "RUN write /a one\nLABEL l=x\n"
    executor = FakeExecutor()
    build(store, text, executor, tmp_path)
    monkeypatch.setattr(runstep, "RUNTIME_VERSION", runstep.RUNTIME_VERSION + 1)
    again = build(store, text, executor, tmp_path)
    assert again.cached() == [False, False]
    assert again.steps[1].cache_reason == "this builder runs RUN steps differently from the one that cached it"


def test_a_rerun_step_with_the_same_layer_keeps_later_steps_cached(store, tmp_path) -> None:
    text = BASE + "RUN write /a same\nRUN write /b later\n"
    executor = FakeExecutor()
    build(store, text, executor, tmp_path)
    again = build(store, text, executor, tmp_path, no_cache_filter=("stage-0",))
    assert again.cached() == [False, False]
    # The no-cache filter reran both; a third build reruns nothing: the chain names the same layers.
    assert build(store, text, executor, tmp_path).cached() == [True, True]


def test_a_rerun_step_with_a_new_layer_invalidates_later_steps(store, tmp_path) -> None:
    text = BASE + "FROM scratch AS a\nRUN counter /n\nFROM a\nRUN write /b later\n"
    executor = FakeExecutor()
    build(store, text.removeprefix(BASE), executor, tmp_path)
    again = build(store, text.removeprefix(BASE), executor, tmp_path, no_cache_filter=("a",))
    by_text = {step.instruction: step.cached for step in again.steps}
    assert by_text["RUN counter /n"] is False
    assert by_text["RUN write /b later"] is False, "the parent layer changed, so must the child"


def test_independent_stages_run_at_the_same_time(store, tmp_path) -> None:
    text = (
        "FROM scratch AS left\nRUN <<EOF\nsay left\nmeet\nEOF\nRUN write /l left\n"
        "FROM scratch AS right\nRUN <<EOF\nsay right\nmeet\nEOF\nRUN write /r right\n"
        "FROM scratch\nCOPY --from=left /l /l\nCOPY --from=right /r /r\n"
    )
    # Both stages' first RUN must be inside the executor together, or the barrier times out.
    # (They differ: two identical steps would rightly wait for each other on the step lock.)
    executor = FakeExecutor(barrier=threading.Barrier(2, timeout=10))
    built = build(store, text, executor, tmp_path)
    assert len(executor.runs) == 4
    assert len(built.config["rootfs"]["diff_ids"]) == 2


def test_a_failed_run_reports_its_status_and_keeps_what_came_before(store, tmp_path) -> None:
    executor = FakeExecutor()
    text = BASE + "ENV A=1\nRUN write /ok fine\nRUN <<EOF\nsay oh no\nfail 3\nEOF\n"
    with pytest.raises(RunError) as caught:
        build(store, text, executor, tmp_path)
    error = caught.value
    assert error.exit_status == 3
    assert error.pos is not None and error.pos.line == 4
    assert "oh no" in (error.hint or "")
    fixed = build(store, BASE + "ENV A=1\nRUN write /ok fine\nRUN write /fixed yes\n", executor, tmp_path)
    assert fixed.cached() == [True, True, False]


def test_an_unknown_stage_in_copy_from_is_a_build_error(store, tmp_path) -> None:
    with pytest.raises(BuildError):
        build(store, BASE + "COPY --from=nowhere-such:1 /x /x\n", FakeExecutor(), tmp_path)


def test_the_index_grows_linearly_with_config_steps(store, tmp_path) -> None:
    """A cache entry holds one step's delta, never the whole state (issue 10, item 10)."""
    lines = [f"ENV V{i}=value-{i}" for i in range(1500)]
    built = build(store, BASE + "\n".join(lines) + "\nRUN env V1499 /last\n", FakeExecutor(), tmp_path)
    assert len(built.config["config"]["Env"]) == 1 + 1500  # scratch's PATH, then the ENVs
    with sqlite3.connect(store.root / "index.db") as db:
        sizes = [len(value) for key, value in db.execute("SELECT key, value FROM cache") if not key.startswith("lineage:")]
        lineage = [len(value) for key, value in db.execute("SELECT key, value FROM cache") if key.startswith("lineage:")]
    assert len(sizes) == 1501
    assert max(sizes) < 600, "an entry must not carry the environment or history built so far"
    assert max(lineage[:-1]) < 1000


def test_a_warm_build_restores_config_history_and_layers_exactly(store, tmp_path) -> None:
    text = (BASE + "ENV PATH=/bin\nWORKDIR /app\nUSER 1000\nEXPOSE 80 90-91/udp\nVOLUME /data\n"
            "ENTRYPOINT [\"x\"]\nSTOPSIGNAL SIGINT\nRUN write /app/f f\nONBUILD RUN true\nMAINTAINER me\n")
    executor = FakeExecutor()
    cold = build(store, text, executor, tmp_path)
    warm = build(store, text, executor, tmp_path)
    assert json.dumps(warm.config, sort_keys=True) == json.dumps(cold.config, sort_keys=True)
    assert warm.config["author"] == "me"
    assert warm.config["config"]["ExposedPorts"] == {"80/tcp": {}, "90/udp": {}, "91/udp": {}}
    # WORKDIR makes its directory in a layer of its own, as BuildKit does.
    assert [entry.get("empty_layer", False) for entry in warm.config["history"]] == (
        [True, False] + [True] * 5 + [False, True, True])


def test_a_failing_stage_stops_a_parallel_stage_at_once(store, tmp_path) -> None:
    # The target waits on stage a first; b's failure must not wait until a is done.
    text = "FROM scratch AS a\nRUN block\nFROM scratch AS b\nRUN fail 3\nFROM scratch\nCOPY --from=a / /\nCOPY --from=b / /\n"
    executor = FakeExecutor()
    began = time.monotonic()
    with pytest.raises(RunError):
        build(store, text, executor, tmp_path)
    assert executor.stopped.is_set() and time.monotonic() - began < 10
