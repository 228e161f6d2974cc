"""The solver's stage threads: order, a bound on threads, the first failure, dropping the rest."""
from __future__ import annotations

import signal
import threading
import time

import pytest

from builder.solve.stagepool import RunDropped, StagePool


def test_runs_return_their_values_with_at_most_the_given_threads_at_once() -> None:
    pool: StagePool[int] = StagePool(workers=2)
    lock = threading.Lock()
    running = peak = 0

    def work(value: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return value * 10

    runs = [pool.submit(lambda value=value: work(value)) for value in range(6)]
    assert pool.wait_all_or_first_failure() is None
    pool.shutdown()
    assert [run.result() for run in runs] == [0, 10, 20, 30, 40, 50]
    assert peak == 2
    assert all(not thread.is_alive() for thread in threading.enumerate() if thread.name.startswith("stage-"))


def test_a_run_waiting_for_a_failed_one_gets_its_error() -> None:
    pool: StagePool[str] = StagePool(workers=2)

    def broken() -> str:
        raise ValueError("base stage failed")

    first = pool.submit(broken)
    second = pool.submit(lambda: first.result() + " and then")
    assert pool.wait_all_or_first_failure() is first
    with pytest.raises(ValueError, match="base stage failed"):
        second.result()  # before shutdown, which would drop it if no thread had taken it yet
    pool.shutdown()


def test_the_wait_ends_at_the_first_failure_not_when_the_rest_are_done() -> None:
    pool: StagePool[str] = StagePool(workers=2)
    release = threading.Event()

    def slow() -> str:
        release.wait(10)
        return "slow done"

    def broken() -> str:
        raise RuntimeError("boom")

    slow_run = pool.submit(slow)
    broken_run = pool.submit(broken)
    started = time.monotonic()
    assert pool.wait_all_or_first_failure() is broken_run
    assert time.monotonic() - started < 5 and not slow_run.finished
    release.set()
    pool.shutdown()
    assert slow_run.result() == "slow done"


def test_shutdown_drops_what_has_not_started_and_waits_for_what_has() -> None:
    pool: StagePool[str] = StagePool(workers=2)
    release = threading.Event()
    busy = [pool.submit(lambda: release.wait(10) and "ran") for _ in range(2)]
    queued = pool.submit(lambda: "never started")  # both threads are busy: it waits its turn
    stopping = threading.Thread(target=pool.shutdown)
    stopping.start()
    with pytest.raises(RunDropped):
        queued.result()  # dropped at once, while the busy runs still run
    assert stopping.is_alive() and not any(run.finished for run in busy)
    release.set()
    stopping.join(10)
    assert not stopping.is_alive()
    assert [run.result() for run in busy] == ["ran", "ran"]
    with pytest.raises(RuntimeError):
        pool.submit(lambda: "late")


def test_a_signal_interrupts_the_wait() -> None:
    pool: StagePool[None] = StagePool(workers=1)
    release = threading.Event()
    pool.submit(lambda: release.wait(10) and None)

    class Interrupted(Exception):
        pass

    def on_alarm(signum: int, frame: object) -> None:
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            pool.wait_all_or_first_failure()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        release.set()
        pool.shutdown()
