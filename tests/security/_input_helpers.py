"""Helpers for the hostile-input tests (test_input_*.py): run the CLI or a snippet in a child
process, so a hang or a runaway allocation is a failed test, never a stuck or killed CI job."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

WORKTREE = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(WORKTREE) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("SOURCE_DATE_EPOCH", None)
    return env


def run_cli(args: list[str], *, cwd: Path, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`builder ARGS` in a child process; stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "builder.cli", *args], cwd=cwd, input=stdin, capture_output=True,
        timeout=timeout, env=child_env(),
    )


def run_snippet(code: str, *, timeout: float) -> str:
    """Run Python `code` in a child; its stdout. Raises subprocess.TimeoutExpired past `timeout`."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout,
        env=child_env(), cwd=WORKTREE,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_clean_failure(done: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit status 1, no traceback, and every `expected` piece in the rendered error."""
    stderr = done.stderr.decode(errors="replace") if isinstance(done.stderr, bytes) else done.stderr
    assert "Traceback" not in stderr, stderr
    assert done.returncode == 1, stderr
    for piece in expected:
        assert piece in stderr, stderr
    return stderr
