"""A handle to stop a running build from another thread: `Cancellation().cancel()`."""
from __future__ import annotations

import threading
from typing import Callable


class Cancellation:
    """Pass one to `builder.build(cancel=...)`; `cancel()` from any thread stops that build.

    Running RUN commands are killed at once; a COPY or export in progress finishes its step first.
    The build then raises `BuildCancelled`, and the store keeps what earlier steps cached.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` when cancelled (at once if already); returns a function that unregisters it."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return lambda: self._forget(callback)
        callback()
        return lambda: None

    def _forget(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
