"""README.md opens with two commands: one installs and runs an example build, one runs the tests.

.ci/run executes both, read from README.md, on a fresh machine; these tests keep the pair honest
without reaching the network (the install command itself needs PyPI and Debian's mirrors).
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _code_blocks() -> list[str]:
    import re

    return re.findall(r"```sh\n(.*?)\n```", (REPO / "README.md").read_text(), flags=re.DOTALL)


def test_ci_runs_the_readme_install_command_then_exactly_the_test_command() -> None:
    install_command, test_command = (block.strip() for block in _code_blocks()[:2])
    ci_text = (REPO / ".ci/run").read_text()
    ci_lines = [line.strip() for line in ci_text.splitlines()]
    assert test_command in ci_lines
    # .ci/run extracts the first block itself; run its extraction and compare.
    extraction = next(line for line in ci_lines if line.startswith("install_command=$("))
    extracted = subprocess.run(
        ["bash", "-c", extraction.removeprefix("install_command=$(").removesuffix(")")],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert extracted == install_command
    assert ci_lines.index('bash -euo pipefail -c "$install_command"') < ci_lines.index(test_command)


def test_test_command_uses_the_venv_the_install_command_fills() -> None:
    install_command, test_command = (block.strip() for block in _code_blocks()[:2])
    python = Path(shlex.split(test_command)[0])
    venv = python.parent.parent
    steps = install_command.split(" && ")
    assert steps[0] == "apt-get update" and steps[1].startswith("apt-get install")
    # Debian's python, not one under /root: tests/solve runs again as an ordinary user.
    assert f"/usr/bin/python3 -m venv {venv}" in steps
    assert f"{venv}/bin/pip install '.[test]'" in steps


def test_installed_console_script_builds_from_any_directory() -> None:
    """The `build` script pip put beside this interpreter (README's venv in CI) works outside the checkout."""
    script = Path(sys.executable).parent / "build"
    assert script.exists(), f"{script} is missing: install the package into this venv (README's install command)"
    completed = subprocess.run(
        [str(script), "--progress", "quiet", "-q", str(REPO / "examples/hello")],
        cwd="/", capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("sha256:")
