"""`builder.build` as a Python caller meets it: a real signature, checked arguments, typed events,
a callback that cannot break the build, cancellation, and builds in parallel threads."""
from __future__ import annotations

import inspect
import os
import threading
import time
import warnings
from pathlib import Path

import pytest
from helpers import write_context

import builder
from builder import BuildCancelled, Cancellation, EventKind, InvalidArgument, RunError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")


def test_build_has_a_real_signature_and_docstring():
    parameters = inspect.signature(builder.build).parameters
    assert list(parameters)[:3] == ["context", "file", "buildfile_text"]
    assert parameters["tags"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "cancel" in parameters and "Cancellation" in builder.build.__doc__
    assert builder.build.__module__ == "builder.api"


@pytest.mark.parametrize(("arguments", "message"), [
    ({"tags": "app:1"}, "tags must be a list of strings, not one string 'app:1'"),
    ({"outputs": "type=oci,dest=x.tar"}, "outputs must be a list of strings"),
    ({"tags": ["ok", 3]}, "tags must hold strings only, not int 3"),
    ({"build_args": {"V": 9}}, "build_args['V'] must be one of the strings, not int 9"),
    ({"build_args": ["V=1"]}, "build_args must be a mapping"),
    ({"labels": {1: "x"}}, "labels keys must be strings"),
    ({"no_cache": "yes"}, "no_cache must be True or False"),
    ({"source_date_epoch": "1700000000"}, "source_date_epoch must be an int or None"),
    ({"network": "bridge"}, "network='bridge' is not one of"),
    ({"on_event": "print"}, "on_event must be callable"),
    ({"cancel": threading.Event()}, "cancel must be a builder.Cancellation"),
    ({"context": 3}, "context must be a directory path"),
])
def test_wrong_argument_types_are_clear_errors_before_any_work(tmp_path, arguments, message):
    root = tmp_path / "store"
    call = {"context": tmp_path, "buildfile_text": "FROM scratch\n", "root": root, **arguments}
    with pytest.raises(InvalidArgument) as caught:
        builder.build(**call)
    assert message in caught.value.message
    assert not root.exists()


def test_events_are_typed_and_a_failing_callback_does_not_stop_the_build(tmp_path):
    context = write_context(tmp_path / "ctx", {"a.txt": "a"})
    seen: list[EventKind] = []

    def callback(event):
        seen.append(event.kind)
        if event.kind is EventKind.STEP_START:
            raise ValueError("a bug in the caller's progress display")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = builder.build(context, buildfile_text="FROM scratch\nCOPY a.txt /a\n", root=tmp_path / "store",
                               on_event=callback, source_date_epoch=0)
    assert result.image_id.startswith("sha256:")
    assert all(isinstance(kind, EventKind) for kind in seen)
    assert seen.count(EventKind.STEP_START) == 2 and seen[-1] is EventKind.BUILD_DONE
    reported = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(reported) == 1 and "a bug in the caller's progress display" in str(reported[0].message)


@needs_root
def test_cancel_stops_a_running_build_and_keeps_earlier_steps(tmp_path, busybox_store):
    context = write_context(tmp_path / "ctx", {})
    text = "FROM busybox\nRUN echo first > /first\nRUN echo started > /dev/stderr; sleep 60\n"
    cancel = Cancellation()
    started = threading.Event()
    outcome: dict = {}

    def on_event(event):
        if event.kind is EventKind.STEP_OUTPUT and "started" in event.text:
            started.set()

    def run():
        try:
            builder.build(context, buildfile_text=text, root=busybox_store.root, cancel=cancel, on_event=on_event)
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run)
    began = time.monotonic()
    thread.start()
    assert started.wait(30)
    cancel.cancel()
    thread.join(30)
    assert not thread.is_alive() and time.monotonic() - began < 30
    assert isinstance(outcome.get("error"), BuildCancelled)
    # Nothing of the cancelled build is left: no sandbox process, mount or scratch dir.
    with open("/proc/self/mountinfo") as mountinfo:
        assert [line for line in mountinfo if str(busybox_store.root) in line] == []
    assert list((busybox_store.root / "tmp").iterdir()) == []
    # The kernel kills the rest of a PID namespace after its init; give it a moment to finish.
    deadline = time.monotonic() + 5
    while (sleeping := _processes_running("sleep 60")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sleeping == []
    # The first RUN was cached before the cancel: a rebuild of the first two steps hits.
    again = builder.build(context, buildfile_text="FROM busybox\nRUN echo first > /first\n", root=busybox_store.root)
    assert [step.cached for step in again.steps[1:]] == [True]


@needs_root
def test_a_failing_build_in_one_thread_leaves_another_threads_build_alone(tmp_path, busybox_store):
    context = write_context(tmp_path / "ctx", {})
    slow = "FROM busybox\nRUN sleep 3 && echo done > /done\n"
    failing = "FROM busybox\nRUN sleep 1; exit 3\n"
    outcome: dict = {}

    def run(name: str, text: str) -> None:
        try:
            outcome[name] = builder.build(context, buildfile_text=text, root=busybox_store.root, no_cache=True)
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread
            outcome[name] = error

    threads = [threading.Thread(target=run, args=("slow", slow)), threading.Thread(target=run, args=("failing", failing))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert isinstance(outcome["failing"], RunError)
    assert not isinstance(outcome["slow"], BaseException), outcome["slow"]
    assert outcome["slow"].steps[-1].layer_diff_id is not None


def _processes_running(command_line: str) -> list[str]:
    """Live (not zombie) processes whose command line is `command_line`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip() != command_line.encode():
                continue
            state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if "zombie" not in state:
            found.append(f"{entry.name}: {state}")
    return found


def test_cancellation_handle():
    cancel = Cancellation()
    calls: list[str] = []
    forget = cancel.on_cancel(lambda: calls.append("a"))
    cancel.on_cancel(lambda: calls.append("b"))
    forget()
    assert not cancel.cancelled
    cancel.cancel()
    cancel.cancel()
    assert cancel.cancelled and calls == ["b"]
    cancel.on_cancel(lambda: calls.append("late"))  # already cancelled: called at once
    assert calls == ["b", "late"]


def test_cancel_with_the_fake_executor_needs_no_root(tmp_path):
    from solve.fake import FakeExecutor
    from solve.fake import build as fake_build

    from builder.image.store import Store

    executor = FakeExecutor()
    cancel = Cancellation()
    outcome: dict = {}

    def run():
        try:
            fake_build(Store.open(tmp_path / "store"), "FROM scratch\nRUN write /a a\nRUN block\n", executor, tmp_path,
                       cancel=cancel)
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    assert executor.blocked.wait(10)
    cancel.cancel()
    thread.join(10)
    assert isinstance(outcome.get("error"), BuildCancelled)
    assert executor.stopped.is_set()


def test_lazy_names_resolve(tmp_path: Path):
    assert builder.BuildResult.__name__ == "BuildResult" and builder.EventKind.STEP_DONE == "step-done"
    with pytest.raises(AttributeError):
        builder.no_such_name  # noqa: B018 - the attribute access is the test
