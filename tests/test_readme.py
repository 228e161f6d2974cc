"""README.md opens with two commands: one installs and runs an example build, one runs the tests."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _code_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", (REPO / "README.md").read_text(), flags=re.DOTALL)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = _code_blocks()[1].strip()
    ci_lines = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines()]
    assert test_command in ci_lines


@pytest.mark.slow
def test_readme_install_and_example_command_works(tmp_path: Path) -> None:
    steps = _code_blocks()[0].strip().split(" && ")
    assert steps[0] == "apt-get update" and steps[1].startswith("apt-get install"), "it starts by installing packages"
    rest = " && ".join(steps[2:])
    # .ci/run has installed the system packages; run the rest with private paths for venv and output.
    rest = rest.replace("/tmp/bvenv", str(tmp_path / "venv")).replace("/tmp/hello-rootfs", str(tmp_path / "out"))
    completed = subprocess.run(["bash", "-c", rest], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().endswith("hello from a FROM scratch image")
    # The installed console script works from any directory, not only the checkout.
    elsewhere = subprocess.run(
        [str(tmp_path / "venv/bin/build"), "--progress", "quiet", "-q", str(REPO / "examples/hello")],
        cwd="/", capture_output=True, text=True, timeout=300,
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert elsewhere.stdout.startswith("sha256:")
