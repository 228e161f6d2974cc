"""The live terminal view, drawn into a fake terminal (a rich Console on a StringIO that claims
to be a terminal) with a clock the test moves: header, ticking timers, step lines, output tail,
transfer bars, the summary, cropping, and NO_COLOR."""
from __future__ import annotations

import io
import re

import pytest

pytest.importorskip("rich")

from rich.console import Console  # noqa: E402

from builder.display import make_progress  # noqa: E402
from builder.liveview import LiveView  # noqa: E402
from builder.progress import Event, EventKind  # noqa: E402

SGR = re.compile(r"\x1b\[[0-9;]*m")  # colour and style codes
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _view(width: int = 100, height: int = 40, colour: bool = True) -> tuple[LiveView, io.StringIO, Clock]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=width, height=height,
                      color_system="standard" if colour else None)
    clock = Clock()
    return LiveView(console, colour=colour, clock=clock, auto_refresh=False), out, clock


def _last_frame(out: io.StringIO) -> list[str]:
    """The lines of the last drawing: everything after the last header, without escape codes."""
    text = ANSI.sub("", out.getvalue())
    start = text.rfind("[+] Building")
    assert start >= 0, text
    return text[start:].split("\n")


def _start(view: LiveView, number: int, text: str, stage: str = "app", position: int = 1, steps: int = 3) -> None:
    view(Event(EventKind.STEP_START, stage, number, 3, text, stage_step=position, stage_steps=steps))


def test_header_and_step_timers_tick_without_events() -> None:
    view, out, clock = _view()
    view(Event(EventKind.BUILD_START, total=3, text="Buildfile"))
    _start(view, 1, "FROM busybox")
    clock.now += 1.0
    view.live.refresh()
    frame = _last_frame(out)
    assert frame[0] == "[+] Building 1.0s (0/3)"
    assert re.fullmatch(r" => \[app 1/3\] FROM busybox +1\.0s", frame[1])
    clock.now += 1.5  # no event in between: the view still moves on
    view.live.refresh()
    frame = _last_frame(out)
    assert frame[0] == "[+] Building 2.5s (0/3)"
    assert frame[1].endswith(" 2.5s") and len(frame[1]) == 100


def test_steps_cached_done_running_and_the_output_tail() -> None:
    view, out, clock = _view()
    view(Event(EventKind.BUILD_START, total=3))
    _start(view, 1, "FROM busybox")
    clock.now += 0.2
    view(Event(EventKind.STEP_DONE, "app", 1, 3, "FROM busybox", 0.2, stage_step=1, stage_steps=3))
    _start(view, 2, "COPY . /src", position=2)
    view(Event(EventKind.STEP_CACHED, "app", 2, 3, "COPY . /src", stage_step=2, stage_steps=3))
    _start(view, 3, "RUN make", position=3)
    view(Event(EventKind.STEP_OUTPUT, "app", 3, text="".join(f"line {n}\n" for n in range(1, 10))))
    clock.now += 3.0
    view.live.refresh()
    frame = _last_frame(out)
    assert frame[0] == "[+] Building 3.2s (2/3)"
    assert re.fullmatch(r" => \[app 1/3\] FROM busybox +0\.2s", frame[1])
    assert re.fullmatch(r" => CACHED \[app 2/3\] COPY \. /src +0\.0s", frame[2])
    assert re.fullmatch(r" => \[app 3/3\] RUN make +3\.0s", frame[3])
    # The last six lines of a running step's output, under it.
    assert frame[4:10] == [f" => => # line {n}" for n in range(4, 10)]
    view(Event(EventKind.STEP_DONE, "app", 3, 3, "RUN make", 3.0, stage_step=3, stage_steps=3))
    view.live.refresh()
    frame = _last_frame(out)
    assert frame[0] == "[+] Building 3.2s (3/3)"
    assert not any("# line" in line for line in frame), "a finished step's output is put away"


def test_transfer_bars_show_bytes_speed_and_time_left() -> None:
    view, out, clock = _view(width=120)
    _start(view, 1, "FROM registry.example/app:1")
    view(Event(EventKind.PULL_START, step=1, text="registry.example/app:1"))
    layer = "sha256:" + "ab" * 32
    view(Event(EventKind.PROGRESS, step=1, id=layer, text=layer[:19], current=1_000_000, total=9_000_000))
    clock.now += 2.0
    view(Event(EventKind.PROGRESS, step=1, id=layer, text=layer[:19], current=5_000_000, total=9_000_000))
    view.live.refresh()
    frame = _last_frame(out)
    assert frame[2] == " => => pulling registry.example/app:1"
    # 4 MB in 2 s: 2 MB/s, 4 MB to go: two seconds left; the bar is 5/9 full.
    assert frame[3] == f" => => {layer[:19]} 5MB / 9MB " + "━" * 11 + "─" * 9 + " 2MB/s 0:02"
    clock.now += 2.0
    view(Event(EventKind.PROGRESS, step=1, id=layer, text=layer[:19], current=9_000_000, total=9_000_000))
    view(Event(EventKind.PULL_DONE, step=1, text="registry.example/app:1", id="sha256:" + "cd" * 32, seconds=4))
    view.live.refresh()
    frame = _last_frame(out)
    assert frame[2] == " => => pulled registry.example/app:1@sha256:" + "cd" * 32
    assert frame[3].startswith(f" => => {layer[:19]} 9MB / 9MB " + "━" * 20) and frame[3].endswith(" done")


def test_summary_after_the_view_names_image_pushes_time_and_cache_hits() -> None:
    view, out, clock = _view()
    view(Event(EventKind.BUILD_START, total=3))
    _start(view, 1, "FROM scratch")
    view(Event(EventKind.STEP_DONE, "app", 1, 3, "FROM scratch", 0.0, stage_step=1, stage_steps=3))
    _start(view, 2, "COPY a /a", position=2)
    view(Event(EventKind.STEP_CACHED, "app", 2, 3, "COPY a /a", stage_step=2, stage_steps=3))
    _start(view, 3, "ENV A=1", position=3)
    view(Event(EventKind.STEP_CACHED, "app", 3, 3, "ENV A=1", stage_step=3, stage_steps=3))
    view(Event(EventKind.BUILD_DONE, id="sha256:" + "1" * 64, text=f"image sha256:{'1' * 64}\nnamed app:1"))
    view(Event(EventKind.PUSH_START, step=4, text="localhost:5000/app:1"))
    clock.now += 0.5
    view(Event(EventKind.PUSH_DONE, step=4, text="localhost:5000/app:1", id="sha256:" + "2" * 64, seconds=0.5))
    clock.now += 1.0
    view.close()
    text = ANSI.sub("", out.getvalue())
    final = text[text.rfind("[+] Building"):]
    assert final.startswith("[+] Building 1.5s (4/4) FINISHED\n")
    assert re.search(r"^ => pushing localhost:5000/app:1 +0\.5s$", final, re.MULTILINE)
    assert final.endswith(
        f"\nimage sha256:{'1' * 64}\nnamed app:1\npushed localhost:5000/app:1@sha256:{'2' * 64}\n"
        "built in 1.5s: 3 steps, 2 from the cache\n")


def test_a_failed_build_closes_the_view_without_a_summary() -> None:
    view, out, clock = _view()
    _start(view, 1, "RUN false")
    view(Event(EventKind.STEP_OUTPUT, "app", 1, text="about to fail\n"))
    view(Event(EventKind.STEP_ERROR, "app", 1, text="RUN failed with exit code 1", seconds=0.3))
    view(Event(EventKind.BUILD_DONE, text="image never"))  # not reached in practice: proves no summary
    view.close(failed=True)
    text = ANSI.sub("", out.getvalue())
    final = text[text.rfind("[+] Building"):]
    assert "FINISHED" not in final.splitlines()[0]
    assert re.search(r"^ => ERROR \[app 1/3\] RUN false +0\.0s$", final, re.MULTILINE)
    assert " => => ERROR: RUN failed with exit code 1\n" in final
    assert " => => # about to fail\n" in final, "a failed step keeps its last output"
    assert "built in" not in final and final.endswith("\n"), "the caller's error starts on a new line"


def test_a_tall_build_keeps_running_steps_in_a_short_terminal() -> None:
    view, out, clock = _view(height=8)
    for number in range(1, 20):
        _start(view, number, f"ENV N{number}=1", position=number, steps=21)
        view(Event(EventKind.STEP_DONE, "app", number, 21, f"ENV N{number}=1", 0.0, stage_step=number,
                   stage_steps=21))
    _start(view, 20, "RUN long", position=20, steps=21)
    view.live.refresh()
    frame = _last_frame(out)
    assert len([line for line in frame if line]) <= 7
    assert frame[0].startswith("[+] Building") and any("RUN long" in line for line in frame)
    view.close()
    text = ANSI.sub("", out.getvalue())
    assert all(f"ENV N{number}=1" in text[text.rfind("[+] Building"):] for number in range(1, 20)), \
        "the final view lists every step"


@pytest.mark.parametrize("no_color, coloured", [(None, True), ("", True), ("1", False)])
def test_no_color_takes_every_colour_and_style_code_out(monkeypatch, no_color, coloured) -> None:
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    out = io.StringIO()
    view = make_progress("tty", out)
    assert isinstance(view, LiveView)
    view(Event(EventKind.STEP_START, "app", 1, 2, "RUN make", stage_step=1, stage_steps=2))
    view(Event(EventKind.STEP_OUTPUT, "app", 1, text="compiling\n"))
    view(Event(EventKind.PROGRESS, step=1, id="files", text="copying files", current=5, total=10))
    view(Event(EventKind.STEP_ERROR, "app", 1, text="boom"))
    view.close(failed=True)
    written = out.getvalue()
    assert "RUN make" in written and "compiling" in written
    assert bool(SGR.search(written)) is coloured
    assert "\x1b[" in written, "the view still redraws in place"
