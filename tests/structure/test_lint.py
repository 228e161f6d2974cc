"""ruff and mypy over the code, with the settings in pyproject.toml (installed by '.[test]')."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=900)


def test_ruff_finds_nothing() -> None:
    completed = _run("ruff", "check", "--no-cache", "builder", "tests", "bench")
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_mypy_finds_nothing(tmp_path: Path) -> None:
    # Files and settings come from pyproject.toml; the cache goes to a temp dir, not the checkout.
    completed = _run("mypy", "--cache-dir", str(tmp_path / "mypy-cache"))
    assert completed.returncode == 0, completed.stdout + completed.stderr
