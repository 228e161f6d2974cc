"""The grammar ships in the wheel: build it, install it in a fresh venv, parse from outside the repo."""
from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from builder.parse import parse_buildfile
from builder.parse.dump import ast_to_data

from ._data import REPO

BUILDFILE = """# escape=`
FROM --platform=linux/amd64 alpine:3.19 AS base
RUN --mount=type=cache,target=/var/cache/apk `
    apk add curl
COPY <<EOF /etc/motd
hello
EOF
HEALTHCHECK --interval=5s CMD ["true"]
"""

PROBE = """
import json, sys
import builder.parse
from builder.parse import parse_buildfile
from builder.parse.dump import ast_to_data
text = open("Buildfile", encoding="utf-8").read()
print(json.dumps({"module": builder.parse.__file__, "ast": ast_to_data(parse_buildfile(text))}))
"""


def _run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_wheel_installs_and_parses_outside_the_repo(tmp_path):
    source = tmp_path / "src"  # build from a copy so the checkout gets no build/ or egg-info
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("builder", "grammar"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    # The new venv sees this environment's packages (lark, setuptools, wheel from '.[test]') through
    # a .pth file, so nothing is fetched; its own site-packages, where the wheel goes, comes first.
    new_site = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    (Path(new_site) / "outer-env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([python, "-c", "import lark, setuptools, wheel"])

    dist = tmp_path / "dist"
    _run([python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)])
    wheels = list(dist.glob("builder-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as archive:
        names = set(archive.namelist())
    assert "builder/grammar/buildfile.lark" in names
    # an explicit package list in pyproject.toml must not forget a package
    packages = {str(path.relative_to(REPO)) for path in (REPO / "builder").rglob("__init__.py")}
    assert packages <= names, f"not in the wheel: {sorted(packages - names)}"
    # --ignore-installed: the outer env's copy of builder is visible through the .pth file.
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed", str(wheels[0])])

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    (workdir / "Buildfile").write_text(BUILDFILE, encoding="utf-8")
    result = _run([python, "-c", PROBE], cwd=workdir)
    reported = json.loads(result.stdout)
    assert reported["module"].startswith(str(venv))  # the installed copy, not the checkout
    assert reported["ast"] == ast_to_data(parse_buildfile(BUILDFILE))
    assert reported["ast"]["escape"] == "`"
