"""tests/solve needs no privilege: run it again as `nobody`, from a copy of the code that user can read."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
USER = "nobody"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
@pytest.mark.skipif(os.environ.get("BUILDER_TESTS_AS_USER") == USER, reason="already running as that user")
def test_the_solve_tests_pass_as_an_ordinary_user() -> None:
    # Not under pytest's tmp_path: its parents are private to root, and pytest looks at them.
    tmp_path = Path(tempfile.mkdtemp(prefix="solve-as-user-"))
    try:
        _run_as_user(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _run_as_user(tmp_path: Path) -> None:
    runuser = shutil.which("runuser")
    assert runuser, "runuser (util-linux) is missing"
    probe = subprocess.run([runuser, "-u", USER, "--", sys.executable, "-c", "import lark, pytest, syrupy"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, (
        f"{USER} cannot run {sys.executable} with the test dependencies ({probe.stderr.strip()}): make the venv "
        "from Debian's /usr/bin/python3, as README's install command does, not from a python under /root"
    )
    copy = tmp_path / "repo"
    for name in ("builder", "grammar", "tests/solve", "tests/fixtures"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "tests/conftest.py"):
        shutil.copy2(REPO / name, copy / name)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    os.chown(scratch, 65534, 65534)
    for path in [tmp_path, *copy.rglob("*"), copy]:
        path.chmod(path.stat().st_mode | 0o005 | (0o001 if path.is_dir() else 0))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(scratch), "BUILDER_TESTS_AS_USER": USER}
    completed = subprocess.run(
        [runuser, "-u", USER, "--", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--basetemp={scratch / 'pt'}", "tests/solve"],
        cwd=copy, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    # This test itself is skipped in there, as it is not root: proof the run was unprivileged.
    assert " passed, 1 skipped" in completed.stdout and "failed" not in completed.stdout
