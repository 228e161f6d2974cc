"""The live terminal view of a build, in the manner of `docker buildx build` on a TTY:

    [+] Building 12.3s (5/9)
     => [base 1/3] FROM localhost:5000/busybox:1                          1.4s
     => => sha256:3f4d90098f5b 1.20MB / 3.40MB ━━━━━━━━━━╸─────────  2.31MB/s 0:01
     => CACHED [base 2/3] COPY app /app                                   0.0s
     => [base 3/3] RUN make                                               3.2s
     => => # cc -c main.c

redrawn ten times a second (the timers tick between events), and a summary when it closes:
the image id and names, what was pushed, the total time and how many steps the cache gave.

Imported only when the CLI draws to a terminal (rich costs ~40 ms to import). Colours follow
NO_COLOR: without colour the view carries no SGR codes at all (it still redraws in place).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from builder.progress import Event, EventKind, Renderer, human_size, step_label

OUTPUT_TAIL = 6  # lines of a running step's output shown under it, as buildx does
BAR_WIDTH = 20


@dataclass
class Transfer:
    label: str
    total: int
    first_seen: float
    first_bytes: int
    current: int = 0
    last_seen: float = 0.0

    def speed(self) -> float:
        """Bytes per second between the first event for it and the last."""
        elapsed = self.last_seen - self.first_seen
        return (self.current - self.first_bytes) / elapsed if elapsed > 0 else 0.0

    @property
    def finished(self) -> bool:
        return bool(self.total) and self.current >= self.total


@dataclass
class Vertex:
    """One numbered line: a step, an export or a push, and what goes on inside it."""

    number: int
    label: str
    started: float
    ended: float | None = None
    state: str = "running"  # running, done, cached, error
    opened_by_push: bool = False
    notes: list[str] = field(default_factory=list)  # "pulling x", "pushed y@sha256:..."
    transfers: dict[str, Transfer] = field(default_factory=dict)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_TAIL))

    def seconds(self, now: float) -> float:
        return (self.ended if self.ended is not None else now) - self.started


class LiveView(Renderer):
    def __init__(self, console: Console, *, colour: bool = True, clock: Callable[[], float] = time.monotonic,
                 auto_refresh: bool = True) -> None:
        self.console = console
        self.colour = colour
        self.clock = clock
        self.lock = threading.RLock()
        self.began = clock()
        self.finished_at: float | None = None
        self.failed = False
        self.total = 0
        self.vertices: dict[int, Vertex] = {}
        self.order: list[int] = []  # by start, as buildx lists them
        self.final = False
        self.summary: list[str] = []
        self.pushed: list[str] = []
        self.cached = 0
        self.steps = 0
        self.closed = False
        self.live = Live(console=console, get_renderable=self.render, auto_refresh=auto_refresh,
                         refresh_per_second=10, transient=False, redirect_stdout=False, redirect_stderr=False)
        self.live.start(refresh=True)

    @classmethod
    def on_stream(cls, stream: TextIO, *, colour: bool) -> "LiveView":
        console = Console(file=stream, force_terminal=True, no_color=not colour, highlight=False,
                          markup=False, emoji=False, color_system="auto" if colour else None)
        return cls(console, colour=colour)

    # --- events ---------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        kind = event.kind
        if kind is EventKind.MESSAGE and event.text:
            # Printed above the view, which redraws below it. Outside our lock: printing renders the view.
            self.console.print(Text(event.text, style=self._style("yellow")), soft_wrap=True)
            return
        with self.lock:
            self._apply(event, self.clock())

    def _apply(self, event: Event, now: float) -> None:
        kind, number = event.kind, event.step
        if kind is EventKind.BUILD_START:
            self.total = max(self.total, event.total)
            return
        if kind is EventKind.BUILD_DONE:
            self.summary = event.text.splitlines()
            return
        if kind in (EventKind.STEP_START, EventKind.EXPORT_START) or (
                kind is EventKind.PUSH_START and number not in self.vertices):
            self.vertices[number] = Vertex(number, step_label(event), now,
                                           opened_by_push=kind is EventKind.PUSH_START)
            self.order.append(number)
            self.total = max(self.total, number, event.total if kind is EventKind.STEP_START else 0)
            return
        vertex = self.vertices.get(number)
        if vertex is None:
            return
        if kind is EventKind.STEP_OUTPUT:
            vertex.tail.extend(event.text.splitlines())
        elif kind in (EventKind.STEP_DONE, EventKind.STEP_CACHED, EventKind.EXPORT_DONE):
            self._end(vertex, now, "cached" if kind is EventKind.STEP_CACHED else "done")
            if kind is not EventKind.EXPORT_DONE:
                self.steps += 1
                self.cached += kind is EventKind.STEP_CACHED
        elif kind is EventKind.STEP_ERROR:
            self._end(vertex, now, "error")
            vertex.notes.append(f"ERROR: {event.text}")
        elif kind is EventKind.PULL_START:
            vertex.notes.append(f"pulling {event.text}")
        elif kind is EventKind.PULL_DONE:
            _replace(vertex.notes, f"pulling {event.text}", f"pulled {event.text}@{event.id}")
        elif kind is EventKind.PUSH_START:
            vertex.notes.append(f"pushing {event.text}")
        elif kind is EventKind.PUSH_DONE:
            self.pushed.append(f"{event.text}@{event.id}")
            _replace(vertex.notes, f"pushing {event.text}", f"pushed {event.text}@{event.id}")
            if vertex.opened_by_push:
                self._end(vertex, now, "done")
        elif kind is EventKind.PROGRESS:
            transfer = vertex.transfers.get(event.id)
            if transfer is None:
                transfer = vertex.transfers[event.id] = Transfer(event.text, event.total, now, event.current)
            transfer.current, transfer.total, transfer.last_seen = event.current, event.total, now

    def _end(self, vertex: Vertex, now: float, state: str) -> None:
        vertex.ended, vertex.state = now, state
        if state != "error":
            vertex.tail.clear()  # buildx hides a finished step's output; a failed one keeps it

    # --- closing ---------------------------------------------------------------------------
    def close(self, failed: bool = False) -> None:
        """Stop redrawing, leave the whole final view on screen, then the summary (unless the
        build failed: the caller prints the error next, on a line of its own)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.failed = failed
            self.finished_at = self.clock()
            self.final = True
        self.live.stop()
        if not failed:
            for line in self.summary_lines():
                self.console.print(Text(line, style=self._style("bold")), soft_wrap=True)  # digests stay whole

    def summary_lines(self) -> list[str]:
        with self.lock:
            lines = list(self.summary)
            lines += [f"pushed {name}" for name in self.pushed]
            elapsed = (self.finished_at or self.clock()) - self.began
            steps = f"{self.steps} step{'s' if self.steps != 1 else ''}"
            lines.append(f"built in {elapsed:.1f}s: {steps}, {self.cached} from the cache")
            return lines

    # --- drawing ---------------------------------------------------------------------------
    def _style(self, style: str | None) -> str:
        return style or "" if self.colour else ""

    def render(self) -> Text:
        with self.lock:
            now = self.finished_at if self.finished_at is not None else self.clock()
            width = max(40, self.console.width)
            done = sum(1 for vertex in self.vertices.values() if vertex.state in ("done", "cached"))
            total = max(self.total, len(self.vertices))
            header = f"[+] Building {now - self.began:.1f}s ({done}/{total})"
            if self.final and not self.failed:
                header += " FINISHED"
            blocks = [self._block(self.vertices[number], now, width) for number in self.order]
            if not self.final:
                blocks = self._fit(blocks, max(2, self.console.height - 1))
            text = Text()
            text.append(header, style=self._style("bold blue" if self.final and not self.failed else "bold"))
            for block in blocks:
                for line in block:
                    text.append("\n")
                    text.append_text(line)
            return text

    def _fit(self, blocks: list[list[Text]], height: int) -> list[list[Text]]:
        """Drop finished steps, oldest first, until the view fits the terminal: running ones stay."""
        lines = sum(len(block) for block in blocks) + 1
        kept = list(blocks)
        for index, number in enumerate(self.order):
            if lines <= height:
                break
            if self.vertices[number].state != "running":
                lines -= len(blocks[index])
                kept[index] = []
        return kept

    def _block(self, vertex: Vertex, now: float, width: int) -> list[Text]:
        state = vertex.state
        style = {"running": None, "done": "blue", "cached": "blue", "error": "red"}[state]
        prefix = {"cached": "CACHED ", "error": "ERROR "}.get(state, "")
        lines = [self._line(f" => {prefix}{vertex.label}", f"{vertex.seconds(now):.1f}s", width, style)]
        for note in vertex.notes:
            lines.append(self._line(f" => => {note}", "", width, "red" if note.startswith("ERROR") else style))
        for item, transfer in vertex.transfers.items():
            lines.append(self._transfer_line(item, transfer, width, now if state == "running" else None))
        for output in vertex.tail:
            lines.append(self._line(f" => => # {output}", "", width, "dim"))
        return lines

    def _line(self, left: str, right: str, width: int, style: str | None) -> Text:
        room = width - len(right) - 1
        if len(left) > room:
            left = left[: max(0, room - 1)] + "…"
        return Text(left.ljust(room) + " " + right if right else left, style=self._style(style))

    def _transfer_line(self, item: str, transfer: Transfer, width: int, now: float | None) -> Text:
        """` => => sha256:0123456789ab 1.20MB / 3.40MB ━━━━━╸──── 2.31MB/s 0:01`"""
        amount = human_size(transfer.current) + (f" / {human_size(transfer.total)}" if transfer.total else "")
        speed = transfer.speed()
        rate = f"{human_size(speed)}/s" if speed else ""
        if transfer.finished:
            tail = "done"
        elif transfer.total and speed:
            left = int((transfer.total - transfer.current) / speed)
            tail = f"{left // 60}:{left % 60:02d}"
        else:
            tail = ""
        right = " ".join(part for part in (rate, tail) if part)
        bar = BAR_WIDTH + 1 if transfer.total else 0
        label = transfer.label
        room = width - len(f" => =>  {amount} ") - bar - len(right)
        if len(label) > room:  # the label gives way first: the numbers are what one watches
            label = label[: max(1, room - 1)] + "…"
        line = Text(f" => => {label} {amount} ", style=self._style("blue" if now is None else None))
        if transfer.total:
            filled = min(BAR_WIDTH, BAR_WIDTH * transfer.current // transfer.total)
            line.append("━" * filled, style=self._style("green" if transfer.finished else "magenta"))
            line.append("─" * (BAR_WIDTH - filled), style=self._style("dim"))
            line.append(" ")
        line.append(right)
        line.truncate(width)
        return line


def _replace(notes: list[str], old: str, new: str) -> None:
    """`pulling x` becomes `pulled x@digest` in place (or is added, if it never started here)."""
    if old in notes:
        notes[notes.index(old)] = new
    else:
        notes.append(new)
