"""Where the parser's testdata lives, shared by the tests in this directory."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "testdata" / "buildfiles"
OK_FILES = sorted((TESTDATA / "ok").glob("*.Buildfile"))
BAD_FILES = sorted((TESTDATA / "bad").glob("*.Buildfile"))


def read(path: Path) -> str:
    """The file's text exactly, CRLF and BOM included (no newline translation)."""
    return path.read_bytes().decode("utf-8")
