"""The CLI on a pseudo-terminal: `--progress auto` draws the live view there, ends with the
summary, and puts an error on lines of its own after the view."""
from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

pytest.importorskip("rich")

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _on_pty(args: list[str], *, no_color: str | None = None) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a 100x30 pty; its exit code and all it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    env.update(PYTHONPATH=str(REPO), TERM="xterm-256color")
    if no_color is not None:
        env["NO_COLOR"] = no_color
    process = subprocess.Popen([sys.executable, "-m", "builder.cli", *args], stdin=slave, stdout=slave,
                               stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError as error:
            if error.errno != errno.EIO:  # EIO: the child closed its side
                raise
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return process.wait(timeout=60), b"".join(chunks).decode("utf-8", errors="replace")


def _final_view(output: str) -> str:
    """The last drawing of the view and what follows it, as plain text."""
    plain = ANSI.sub("", output)
    return plain[plain.rfind("[+] Building"):].replace("\r", "")


def _context(tmp_path: Path, buildfile: str) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a.txt").write_text("a\n")
    (context / "Buildfile").write_text(buildfile)
    return context


def test_a_build_on_a_terminal_draws_the_view_and_a_summary(tmp_path) -> None:
    context = _context(tmp_path, "FROM scratch\nCOPY a.txt /a\nENV A=1\n")
    code, output = _on_pty(["--root", str(tmp_path / "store"), "build", "-t", "term:1", str(context)])
    assert code == 0, output
    final = _final_view(output).split("\n")
    assert re.fullmatch(r"\[\+\] Building \d+\.\ds \(3/3\) FINISHED", final[0].rstrip())
    assert re.fullmatch(r" => \[stage-0 2/3\] COPY a\.txt /a +\d+\.\ds", final[2].rstrip())
    image = re.search(r"^image (sha256:[0-9a-f]{64})$", "\n".join(final), re.MULTILINE)
    assert image and "named term:1" in final
    assert re.search(r"^built in \d+\.\ds: 3 steps, 0 from the cache$", "\n".join(final), re.MULTILINE)
    assert "\x1b[34m" in output, "coloured on a terminal"
    code, output = _on_pty(["--root", str(tmp_path / "store"), "build", str(context)], no_color="1")
    assert code == 0 and not re.search(r"\x1b\[[0-9;]*m", output), "NO_COLOR: no colour codes at all"
    assert "3 steps, 2 from the cache" in output


def test_an_error_on_a_terminal_starts_on_a_line_of_its_own(tmp_path) -> None:
    context = _context(tmp_path, "FROM scratch\nCOPY missing.txt /m\n")
    code, output = _on_pty(["--root", str(tmp_path / "store"), "build", str(context)])
    assert code == 1
    plain = _final_view(output)
    message = f'{context}/Buildfile:2:1: file not found in build context: "missing.txt"'
    at = plain.index(message)
    assert plain[at - 1] == "\n", "the error is not glued to a step line"
    view = plain[:at]
    assert re.search(r"^ => ERROR \[stage-0 2/2\] COPY missing\.txt /m +\d+\.\ds$", view, re.MULTILINE)
    assert "built in" not in plain
