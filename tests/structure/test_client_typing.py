"""A Python build script type-checks against builder's public names, and mypy catches a wrong call."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CLIENT = '''
import builder
from builder import BuildCancelled, BuildError, BuildResult, Cancellation, Event, EventKind


def show(event: Event) -> None:
    if event.kind is EventKind.STEP_DONE:
        print(event.step, event.text, event.seconds)


def release(cancel: Cancellation) -> str:
    try:
        result: BuildResult = builder.build(
            "ctx", tags=["app:1"], build_args={"V": "1"}, outputs=["type=oci,dest=app.tar"],
            on_event=show, source_date_epoch=0, cancel=cancel,
        )
    except BuildCancelled:
        return "cancelled"
    except BuildError as error:
        return error.render()
    return result.image_id + " " + " ".join(step.instruction for step in result.steps)
'''

WRONG = '''
import builder

builder.build("ctx", build_args={"V": 9})
builder.build("ctx", no_cache="yes")
builder.build("ctx", colour=True)
'''


def _mypy(script: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache), "--follow-imports=silent", "--strict", str(script)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={"PATH": "/usr/bin:/bin", "MYPYPATH": str(REPO)},
    )


def test_a_client_script_type_checks(tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    completed = _mypy(script, tmp_path / "cache")
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_mypy_catches_wrong_calls(tmp_path: Path) -> None:
    script = tmp_path / "wrong.py"
    script.write_text(WRONG)
    completed = _mypy(script, tmp_path / "cache")
    assert completed.returncode == 1
    errors = [line for line in completed.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 3, completed.stdout
    assert "wrong.py:4:" in errors[0] and '"int"; expected "str": "str"' in errors[0]
    assert "wrong.py:5:" in errors[1] and '"no_cache"' in errors[1]
    assert "wrong.py:6:" in errors[2] and '"colour"' in errors[2]
