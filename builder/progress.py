"""Build events and the ways to show them: a terminal display, plain lines, JSON lines, nothing.

The solver reports through one callback taking `Event`s; the CLI picks a renderer, a library
user passes their own callback.
"""
from __future__ import annotations

import json
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Callable, TextIO


class EventKind(StrEnum):
    """What an `Event` reports; each is equal to its string value ("step-start", ...)."""

    STEP_START = "step-start"  # a step begins: stage, step, total, text (the instruction)
    STEP_OUTPUT = "step-output"  # output of a running RUN: text
    STEP_DONE = "step-done"  # a step ran: seconds, cache_reason (why the cache was not used)
    STEP_CACHED = "step-cached"  # a step came from the cache
    MESSAGE = "message"  # a note for the user: text
    BUILD_DONE = "build-done"  # the image is made: text names it and its tags


@dataclass(frozen=True)
class Event:
    kind: EventKind
    stage: str = ""
    step: int = 0  # 1-based number within the whole build, 0 for build-level events
    total: int = 0
    text: str = ""  # the instruction for step events, output text for step-output
    seconds: float = 0.0
    cache_reason: str = ""  # for step-done: why the cache was not used


    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EventKind(self.kind))  # a kind nobody knows is a bug here


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


class PlainProgress:
    """One line per event, no cursor movement: for CI logs and pipes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            line = self._format(event)
            if line is not None:
                self.stream.write(line)
                self.stream.flush()

    def _format(self, event: Event) -> str | None:
        prefix = f"#{event.step} " if event.step else ""
        if event.kind == "step-start":
            return f"{prefix}[{event.stage} {event.step}/{event.total}] {event.text}\n"
        if event.kind == "step-output":
            body = event.text if event.text.endswith("\n") else event.text + "\n"
            return "".join(f"{prefix}{line}\n" for line in body.splitlines())
        if event.kind == "step-cached":
            return f"{prefix}CACHED\n"
        if event.kind == "step-done":
            return f"{prefix}DONE {event.seconds:.1f}s\n"
        if event.kind in ("message", "build-done"):
            return f"{event.text}\n" if event.text else None
        return None


class TtyProgress(PlainProgress):
    """A terminal display: one line per step ending with its time (or CACHED); RUN output shown
    dimmed under its step. A step's line stays open until it ends, unless output comes first."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self.open_step = 0  # the step whose line has no newline yet

    def _close_open_line(self) -> str:
        if not self.open_step:
            return ""
        self.open_step = 0
        return "\n"

    def _format(self, event: Event) -> str | None:
        head = f"[{event.stage} {event.step}/{event.total}] {event.text}"
        if event.kind == "step-start":
            prefix = self._close_open_line()
            self.open_step = event.step
            return f"{prefix}\033[1m=>\033[0m {head}"
        if event.kind == "step-output":
            prefix = self._close_open_line()
            return prefix + "".join(f"\033[2m   {line}\033[0m\n" for line in event.text.splitlines())
        if event.kind in ("step-cached", "step-done"):
            verdict = "\033[36mCACHED\033[0m" if event.kind == "step-cached" else f"\033[32m{event.seconds:.1f}s\033[0m"
            if self.open_step == event.step:
                self.open_step = 0
                return f"  {verdict}\n"
            prefix = self._close_open_line()
            return f"{prefix}\033[1m=>\033[0m {head}  {verdict}\n"
        text = super()._format(event)
        return self._close_open_line() + text if text else None


class JsonProgress(PlainProgress):
    """JSON lines, one object per event, for tools that read the build's progress."""

    def _format(self, event: Event) -> str | None:
        record = asdict(event)
        record["time"] = round(time.time(), 3)
        return json.dumps(record, sort_keys=True) + "\n"


def make_progress(mode: str, stream: TextIO | None = None) -> EventCallback | None:
    stream = stream or sys.stderr
    if mode == "auto":
        mode = "tty" if stream.isatty() else "plain"
    if mode == "quiet":
        return None
    if mode == "tty":
        return TtyProgress(stream)
    if mode == "plain":
        return PlainProgress(stream)
    if mode == "json":
        return JsonProgress(stream)
    raise ValueError(f"unknown progress mode {mode!r}")
