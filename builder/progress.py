"""Build events and the ways to show them: a live terminal view, plain lines, JSON lines, nothing.

The solver, the registry client and the exporters report through one callback taking `Event`s;
the CLI picks a renderer, a library user passes their own callback. Every event of a step carries
the step's number, fixed by Buildfile order before the build starts (stages in the plan's order,
then their instructions), so two runs of one Buildfile number their steps alike whatever stage
happens to start first. Exports and pushes are numbered after the steps.

`rawjson` is documented in docs/PROGRESS.md (schema version `SCHEMA_VERSION`). The live view
lives in builder.liveview; builder.display picks a renderer for `--progress`.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Callable, TextIO

SCHEMA_VERSION = 1


class EventKind(StrEnum):
    """What an `Event` reports; each is equal to its string value ("step-start", ...)."""

    BUILD_START = "build-start"  # the build begins: total (numbered steps and exports known now), text (Buildfile)
    STEP_START = "step-start"  # a step begins: stage, step, total, text (the instruction), stage_step/stage_steps
    STEP_OUTPUT = "step-output"  # output of a running RUN: step, text (whole lines)
    STEP_DONE = "step-done"  # a step ran: seconds, cache_reason (why the cache was not used)
    STEP_CACHED = "step-cached"  # a step came from the cache
    STEP_ERROR = "step-error"  # a step failed: text (the error), seconds
    PULL_START = "pull-start"  # an image is pulled for a step: step, text (the reference)
    PULL_DONE = "pull-done"  # ... and is in the store: id (its manifest digest), seconds
    PROGRESS = "progress"  # bytes moved: step, id (what moves, e.g. a digest), text (label), current, total (0: not known yet)
    EXPORT_START = "export-start"  # an --output is written: step (its own number), text (the output)
    EXPORT_DONE = "export-done"  # ... written: id (the manifest digest it shipped, if any), seconds
    PUSH_START = "push-start"  # an image goes to a registry: step, text (the reference)
    PUSH_DONE = "push-done"  # ... pushed: id (the manifest digest the registry has), seconds
    MESSAGE = "message"  # a note for the user: text
    BUILD_DONE = "build-done"  # the image is made: id (image id), text names it and its tags, seconds


@dataclass(frozen=True)
class Event:
    """One progress report handed to the display or to `on_event` (see EventKind for each kind)."""

    kind: EventKind
    stage: str = ""
    step: int = 0  # the step's (or export's, push's) number within the whole build, 0 for build-level events
    total: int = 0  # step events: how many numbered items the build has; progress: total bytes (0: unknown)
    text: str = ""  # the instruction for step events, output text for step-output, a label for progress
    seconds: float = 0.0
    cache_reason: str = ""  # for step-done: why the cache was not used
    id: str = ""  # progress: the item moving (unique within its step); done events: the digest made
    current: int = 0  # progress: bytes moved so far
    stage_step: int = 0  # step events: position within the stage (FROM is 1); 0 for an ONBUILD trigger
    stage_steps: int = 0  # step events: how many steps the stage has

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EventKind(self.kind))  # a kind nobody knows is a bug here

    def to_json(self) -> dict:
        """The rawjson record (docs/PROGRESS.md): every field, the schema version and the time."""
        record = asdict(self)
        del record["kind"]
        record["seconds"] = round(self.seconds, 3)
        return {"v": SCHEMA_VERSION, "kind": str(self.kind), "time": round(time.time(), 3), **record}


EventCallback = Callable[[Event], None]


class GuardedCallback:
    """A caller's `on_event`, made unable to break the build.

    The policy (documented in README's Library section): an exception raised by the callback does
    not stop the build; that event is dropped for the callback, later events still reach it, the
    first exception is kept in `first_error` and reported once as a RuntimeWarning. A caller that
    wants to stop the build uses a `Cancellation`.
    """

    def __init__(self, callback: EventCallback) -> None:
        self.callback = callback
        self.first_error: Exception | None = None
        self.errors = 0
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        try:
            self.callback(event)
        except Exception as error:  # noqa: BLE001 - the policy above: any error of the callback
            with self._lock:
                self.errors += 1
                first = self.first_error is None
                if first:
                    self.first_error = error
            if first:
                warnings.warn(f"on_event raised {error!r} on a {event.kind} event; the build goes on",
                              RuntimeWarning, stacklevel=2)


# --- byte progress ----------------------------------------------------------------------------

PROGRESS_INTERVAL = 0.1  # at most this often a PROGRESS event per item: ~10 a second


class Transfer:
    """Bytes of one item (a blob pulled or pushed, an archive written, files copied) as PROGRESS
    events, at most one per `interval` so a callback is never flooded and counting costs nothing
    the transfer would notice. Safe to advance from several threads.

    `threshold`: no event until that many bytes have moved (small COPYs stay silent)."""

    def __init__(self, emit: EventCallback | None, *, step: int, id: str, text: str, total: int = 0,
                 stage: str = "", threshold: int = 0, interval: float = PROGRESS_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.emit, self.step, self.id, self.text, self.total, self.stage = emit, step, id, text, total, stage
        self.threshold, self.interval, self.clock = threshold, interval, clock
        self.current = 0
        self.shown = False  # an event went out: the end must be shown too
        self._last = float("-inf")
        self._lock = threading.Lock()

    def advance(self, count: int) -> None:
        if self.emit is None:
            return
        with self._lock:
            self.current += count
            if self.current < self.threshold:
                return
            now = self.clock()
            if now - self._last < self.interval:
                return
            self._last = now
            self.shown = True
            current = self.current
        self._send(current)

    def restart(self, at: int = 0) -> None:
        """A broken transfer starts over (or a chunk of it at `at`); the next advance shows it."""
        with self._lock:
            self.current = at

    def finish(self) -> None:
        """The last event (all bytes moved), sent if any was, or if the item was large enough."""
        if self.emit is None:
            return
        with self._lock:
            if not self.shown and self.current < max(self.threshold, 1):
                return
            self.shown = True
            if self.total and self.current < self.total:
                self.current = self.total  # e.g. a blob the store already had
            self.total = self.total or self.current  # known now: the last event says it is complete
            current = self.current
        self._send(current)

    def _send(self, current: int) -> None:
        assert self.emit is not None
        self.emit(Event(EventKind.PROGRESS, self.stage, self.step, self.total, self.text, id=self.id,
                        current=current))


class CountingReader:
    """A binary stream whose reads advance a Transfer (an upload's body)."""

    def __init__(self, stream, transfer: Transfer) -> None:
        self._stream, self._transfer = stream, transfer

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._transfer.advance(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._stream.seek(offset, whence)
        self._transfer.restart(position)  # an upload chunk starts at its offset
        return position

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "CountingReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CountingSink:
    """A sink whose writes advance a Transfer (a download, an archive written)."""

    def __init__(self, sink, transfer: Transfer) -> None:
        self._sink, self._transfer = sink, transfer

    def write(self, data) -> int:
        written = self._sink.write(data)
        self._transfer.advance(len(data))
        return written


def error_message(error: BaseException) -> str:
    """What a step-error event says about `error`."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    message = getattr(error, "message", None)  # a BuildError's own words, without position and hint
    return message if isinstance(message, str) else str(error) or type(error).__name__


def human_size(count: float) -> str:
    """Sizes as Docker shows them: decimal units, 3 significant digits ("12.3MB", "512B")."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 999.5 or unit == "TB":  # 999.5 would round to "1e+03"
            return f"{count:.0f}{unit}" if unit == "B" else f"{count:.3g}{unit}"
        count /= 1000
    raise AssertionError("unreachable")


def step_label(event: Event) -> str:
    """`[stage 2/4] RUN make` as BuildKit names a step; exports and pushes by their text."""
    if event.kind is EventKind.EXPORT_START:
        return f"exporting to {event.text}"
    if event.kind is EventKind.PUSH_START:
        return f"pushing {event.text}"
    if event.stage_step:
        return f"[{event.stage} {event.stage_step}/{event.stage_steps}] {event.text}"
    return f"[{event.stage}] {event.text}"


def no_color() -> bool:
    """https://no-color.org: NO_COLOR set and not empty."""
    return bool(os.environ.get("NO_COLOR"))


# --- renderers --------------------------------------------------------------------------------


class Renderer:
    """A progress callback that may hold a display open: `close()` ends it (before the CLI prints
    an error, which then starts on a line of its own)."""

    def __call__(self, event: Event) -> None:
        raise NotImplementedError

    def close(self, failed: bool = False) -> None:
        """End the display; `failed`: the build raised (no summary then)."""


class PlainProgress(Renderer):
    """BuildKit's plain output: every line starts with its step's `#N`, a step's output lines
    carry the seconds since it started, byte progress at most once a second per item. For CI
    logs and pipes; no cursor movement, no colour."""

    PROGRESS_EVERY = 1.0

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.clock = clock
        self.lock = threading.Lock()
        self.started: dict[int, float] = {}
        self.opened_by_push: set[int] = set()
        self.progress_shown: dict[tuple[int, str], float] = {}
        self.last_step: int | None = None  # a blank line separates the lines of different steps
        self.pushed: list[str] = []

    def __call__(self, event: Event) -> None:
        with self.lock:
            lines = self._lines(event)
            if not lines:
                return
            if event.step and self.last_step is not None and event.step != self.last_step:
                self.stream.write("\n")
            if event.step:
                self.last_step = event.step
            self.stream.write("".join(f"#{event.step} {line}\n" if event.step else f"{line}\n" for line in lines))
            self.stream.flush()

    def _lines(self, event: Event) -> list[str]:
        kind, step = event.kind, event.step
        now = self.clock()
        if kind in (EventKind.STEP_START, EventKind.EXPORT_START) or (
                kind is EventKind.PUSH_START and step not in self.started):
            self.started[step] = now
            if kind is EventKind.PUSH_START:
                self.opened_by_push.add(step)
            return [step_label(event)]
        if kind is EventKind.STEP_OUTPUT:
            offset = now - self.started.get(step, now)
            return [f"{offset:.3f} {line}" for line in event.text.splitlines()]
        if kind is EventKind.STEP_CACHED:
            return ["CACHED"]
        if kind in (EventKind.STEP_DONE, EventKind.EXPORT_DONE):
            return [f"DONE {event.seconds:.1f}s"]
        if kind is EventKind.STEP_ERROR:
            return [f"ERROR: {event.text}"]
        if kind is EventKind.PULL_START:
            return [f"pulling {event.text}"]
        if kind is EventKind.PULL_DONE:
            return [f"pulled {event.text}@{event.id} {event.seconds:.1f}s done"]
        if kind is EventKind.PUSH_START:
            return [f"pushing {event.text}"]
        if kind is EventKind.PUSH_DONE:
            self.pushed.append(f"{event.text}@{event.id}")
            lines = [f"pushed {event.text}@{event.id} {event.seconds:.1f}s done"]
            if step in self.opened_by_push:
                lines.append(f"DONE {event.seconds:.1f}s")
            return lines
        if kind is EventKind.PROGRESS:
            return self._progress(event, now)
        if kind in (EventKind.MESSAGE, EventKind.BUILD_DONE):
            return event.text.splitlines()
        return []

    def _progress(self, event: Event, now: float) -> list[str]:
        key = (event.step, event.id)
        finished = bool(event.total) and event.current >= event.total
        last = self.progress_shown.get(key)
        if last == float("inf"):
            return []  # its end was shown already
        if last is None and not finished:
            self.progress_shown[key] = now  # a transfer done within a second gets one line, its end
            return []
        if not finished and last is not None and now - last < self.PROGRESS_EVERY:
            return []
        self.progress_shown[key] = float("inf") if finished else now
        amount = human_size(event.current) + (f" / {human_size(event.total)}" if event.total else "")
        elapsed = now - self.started.get(event.step, now)
        return [f"{event.text} {amount} {elapsed:.1f}s" + (" done" if finished else "")]


class JsonProgress(Renderer):
    """rawjson: one JSON object per event and line (docs/PROGRESS.md), for tools."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = json.dumps(event.to_json()) + "\n"
        with self.lock:
            self.stream.write(line)
            self.stream.flush()
