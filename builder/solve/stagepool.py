"""A few threads that run a build's stages, and a wait that ends at the first failure.

The solver used concurrent.futures (ThreadPoolExecutor, wait(FIRST_EXCEPTION)) for this; importing
it loads logging and traceback, about 5 ms of a 90 ms no-op rebuild, where start-up is nearly all
the time. The solver needs only this much of it: submit calls, ask a run for its result (a stage
waits for the stages it copies from that way), wait until all are done or one failed, and on the
way out drop what has not started and wait for what has.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class RunDropped(Exception):
    """The run never started: the pool was shut down first (after another run failed)."""


class Run(Generic[T]):
    """One submitted call; `result()` waits for it, then returns its value or raises its error."""

    def __init__(self, call: Callable[[], T]) -> None:
        self._call = call
        self._finished = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def failed(self) -> bool:
        return self._finished.is_set() and self._error is not None

    def result(self) -> T:
        self._finished.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set whenever _error is None

    def _execute(self) -> None:
        try:
            self._value = self._call()
        except BaseException as error:  # handed to whoever asks for the result, as a future does
            self._error = error
        finally:
            self._finished.set()

    def _drop(self) -> None:
        self._error = RunDropped("not started: the build stopped first")
        self._finished.set()


class StagePool(Generic[T]):
    """Runs submitted calls in order on at most `workers` threads."""

    def __init__(self, workers: int) -> None:
        self._workers = max(1, workers)
        self._live = 0  # worker threads that have not yet decided to exit
        self._threads: list[threading.Thread] = []
        self._pending: deque[Run[T]] = deque()
        self._runs: list[Run[T]] = []
        self._changed = threading.Condition()
        self._closed = False

    def submit(self, call: Callable[[], T]) -> Run[T]:
        run = Run(call)
        with self._changed:
            if self._closed:
                raise RuntimeError("submit after shutdown")
            self._pending.append(run)
            self._runs.append(run)
            if self._live < self._workers:
                self._live += 1
                thread = threading.Thread(target=self._work, name=f"stage-{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
        return run

    def _work(self) -> None:
        while True:
            with self._changed:
                if not self._pending:
                    self._live -= 1  # under the lock: a submit after this starts a new thread
                    return
                run = self._pending.popleft()
            run._execute()
            with self._changed:
                self._changed.notify_all()

    def wait_all_or_first_failure(self) -> Run[T] | None:
        """Block until every run has finished or one has failed; returns the first failed run in
        submission order (None when all succeeded). A signal (Ctrl-C) interrupts the wait."""
        with self._changed:
            while True:
                failed = next((run for run in self._runs if run.failed), None)
                if failed is not None or all(run.finished for run in self._runs):
                    return failed
                self._changed.wait()

    def shutdown(self) -> None:
        """Drop the runs not yet started (their result() raises RunDropped, so a stage waiting
        for one ends too), then wait for the running ones."""
        with self._changed:
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
        for run in dropped:
            run._drop()
        for thread in self._threads:
            thread.join()
