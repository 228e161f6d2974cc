"""`--progress MODE`: which renderer of builder.progress (or builder.liveview) shows a build.

Kept apart from builder.progress so the live view, which builds on progress, is imported only
here and only for a terminal (rich costs ~40 ms to import)."""
from __future__ import annotations

import sys
from typing import TextIO

from builder.errors import BuildError
from builder.progress import JsonProgress, PlainProgress, Renderer, no_color

PROGRESS_MODES = ("auto", "tty", "plain", "quiet", "rawjson", "json")


def make_progress(mode: str, stream: TextIO | None = None) -> Renderer | None:
    """The renderer for `--progress MODE` writing to `stream` (stderr); None for quiet.

    auto: the live view on a terminal, plain lines otherwise. json is an alias of rawjson."""
    stream = stream or sys.stderr
    asked_tty = mode == "tty"
    if mode == "auto":
        mode = "tty" if stream.isatty() else "plain"
    if mode == "quiet":
        return None
    if mode == "tty":
        try:
            from builder.liveview import LiveView
        except ModuleNotFoundError as error:
            if error.name != "rich":
                raise
            if not asked_tty:
                return PlainProgress(stream)
            raise BuildError("--progress=tty needs the rich package",
                             hint="pip install rich, or use --progress=plain") from None
        return LiveView.on_stream(stream, colour=not no_color())
    if mode == "plain":
        return PlainProgress(stream)
    if mode in ("rawjson", "json"):
        return JsonProgress(stream)
    raise ValueError(f"unknown progress mode {mode!r}")
