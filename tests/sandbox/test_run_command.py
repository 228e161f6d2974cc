"""`builder run` and run_image: the image's ENTRYPOINT/CMD/ENV/WORKDIR/USER apply like docker run,
flags override them, and nothing is written to the store."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.errors import ImageNotFound, SandboxError
from builder.image.importer import import_rootfs
from builder.image.store import Store
from builder.solve.changes import apply_changes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def image_store(tmp_path: Path, busybox_layer: Path) -> Store:
    store = Store.open(tmp_path / "store")
    import_rootfs(store, busybox_layer, "bb:latest")
    changes = [
        'ENV GREETING="hello there" A=1',
        "WORKDIR /srv/app",
        "USER app",
        'ENTRYPOINT ["/bin/sh", "-c"]',
        'CMD ["echo $GREETING from $(pwd) as $(id -un)"]',
    ]
    import_rootfs(store, busybox_layer, "configured:latest", edit_config=lambda config: apply_changes(config, changes))
    return store


def collect(store, ref, argv=(), **kwargs) -> tuple[int, str]:
    from builder.commands.run import run_image

    chunks: list[bytes] = []
    status = run_image(store, ref, argv, on_output=chunks.append, **kwargs)
    return status, b"".join(chunks).decode()


def store_files(store: Store) -> set[str]:
    return {str(p.relative_to(store.root)) for p in Path(store.root).rglob("*")
            if "tmp" not in p.relative_to(store.root).parts[:1]}


def test_image_config_applies(image_store):
    status, out = collect(image_store, "configured")
    assert (status, out) == (0, "hello there from /srv/app as app\n")


def test_command_line_replaces_cmd_but_keeps_entrypoint(image_store):
    status, out = collect(image_store, "configured", ["echo $A; exit 3"])
    assert (status, out) == (3, "1\n")


def test_flags_override_the_image(image_store):
    status, out = collect(image_store, "configured", ["id", "-u"], entrypoint=[], user="0",
                          workdir="/tmp", env=[("A", "2")])
    assert (status, out) == (0, "0\n")
    status, out = collect(image_store, "configured", ["-c", "echo $A $HOME; pwd"], entrypoint=["/bin/sh"],
                          user="root", workdir="/tmp", env=[("A", "2")])
    assert out == "2 /root\n/tmp\n"


def test_run_writes_no_layer(image_store):
    collect(image_store, "bb", ["true"])  # the first run unpacks the image's snapshot dirs
    before = store_files(image_store)
    status, _ = collect(image_store, "bb", ["/bin/sh", "-c", "echo x > /new && rm /etc/passwd"])
    assert status == 0
    assert store_files(image_store) == before
    status, out = collect(image_store, "bb", ["/bin/sh", "-c", "cat /etc/passwd | wc -l; ls /new"])
    assert out.split()[0] == "3"


def test_network_none(image_store):
    status, out = collect(image_store, "bb", ["ls", "/sys/class/net"], network="none")
    assert out.split() == ["lo"]


def test_unknown_image(image_store):
    with pytest.raises(ImageNotFound):
        collect(image_store, "nope:latest", ["true"])


def test_image_without_command(image_store):
    with pytest.raises(SandboxError) as caught:
        collect(image_store, "bb")
    assert caught.value.hint


def test_cli(image_store, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "builder.cli", "--root", str(image_store.root), "run", "--rm",
         "--network", "none", "-e", "X=from cli", "-w", "/work", "--user", "1000:1000",
         "bb", "/bin/sh", "-c", "echo $X; pwd; id -u; exit 4"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 4, result.stderr
    assert result.stdout == "from cli\n/work\n1000\n"


def test_cli_missing_program_is_a_clear_error(image_store):
    result = subprocess.run(
        [sys.executable, "-m", "builder.cli", "--root", str(image_store.root), "run", "bb", "nosuchprog"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 127  # docker run's code for a command that is not found
    assert "nosuchprog" in result.stderr and "Traceback" not in result.stderr


def test_cli_command_that_cannot_run_exits_126(image_store):
    result = subprocess.run(
        [sys.executable, "-m", "builder.cli", "--root", str(image_store.root), "run", "bb", "/etc/passwd"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 126, result.stderr
