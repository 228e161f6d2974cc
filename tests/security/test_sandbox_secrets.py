"""Issue 10, item 7: a secret reaches RUN without touching a disk, even if the builder is
killed mid-RUN; RUN --mount=type=tmpfs is a real tmpfs (size= honoured)."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import builder
from security.sandbox_support import mountinfo, needs_root

pytestmark = [needs_root]

REPO = Path(__file__).resolve().parents[2]


def processes_with(marker: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in entry.joinpath("cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid` (children lists of all its threads, recursively)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            for child in children:
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def files_holding(root: Path, needle: bytes, skip: Path) -> list[Path]:
    holding = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if path == skip or path.is_symlink() or not path.is_file():
                continue
            with open(path, "rb") as handle:
                tail = b""
                while chunk := handle.read(1 << 20):
                    if needle in tail + chunk:
                        holding.append(path)
                        break
                    tail = chunk[-len(needle):]
    return holding


def test_a_killed_builder_leaves_the_secret_nowhere_on_disk(tmp_path, busybox_store):
    token = f"SECRET-{secrets.token_hex(12)}".encode()
    source = tmp_path / "token.txt"
    source.write_bytes(token)
    marker = f"{3000 + os.getpid() % 1000}.{secrets.randbelow(10**6)}"
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Buildfile").write_text(
        "FROM busybox\n"
        "RUN --mount=type=secret,id=tok,required=true "
        f"sh -c 's=$(cat /run/secrets/tok) && test -n \"$s\" && exec sleep {marker}'\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "builder.cli", "--root", str(busybox_store.root), "build", "--progress", "plain",
         "--secret", f"id=tok,src={source}", str(context)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert wait_until(lambda: bool(processes_with(marker.encode()))), "the RUN step never started"
        helpers = descendants(process.pid)  # the sandbox and its network helper
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert wait_until(lambda: not processes_with(marker.encode())), "the RUN outlived the builder"
    assert wait_until(lambda: not any(alive(pid) for pid in helpers)), "a helper outlived the builder"
    # (Other test areas may mount things meanwhile: only mounts under our tmp_path count.)
    assert str(tmp_path) not in mountinfo()
    # Not in the store, its scratch dirs, the context: nowhere but the secret's own file.
    assert files_holding(tmp_path, token, skip=source) == []


def test_secret_and_tmpfs_mounts_live_in_memory(tmp_path, busybox_store):
    token = f"SECRET-{secrets.token_hex(12)}"
    source = tmp_path / "token.txt"
    source.write_text(token)
    context = tmp_path / "ctx"
    context.mkdir()
    text = (
        "FROM busybox\n"
        "RUN --mount=type=secret,id=tok,mode=0440,uid=1000,gid=50 "
        "--mount=type=tmpfs,target=/scratch,size=1m "
        "awk '$2 == \"/run/secrets/tok\" || $2 == \"/scratch\" {print $2, $3, $4}' /proc/mounts > /mounts"
        " && stat -c '%a %u %g' /run/secrets/tok > /secret-stat"
        " && (echo x >> /run/secrets/tok 2>/dev/null && echo writable || echo read-only) >> /secret-stat"
        " && (dd if=/dev/zero of=/scratch/big bs=1024 count=2048 2>/dev/null && echo fits || echo full) > /scratch-fill\n"
    )
    dest = tmp_path / "out"
    builder.build(context, buildfile_text=text, root=busybox_store.root, secrets={"tok": source},
                  outputs=[f"type=local,dest={dest}"])
    mounts = {line.split()[0]: line.split()[1:] for line in (dest / "mounts").read_text().splitlines()}
    assert mounts["/run/secrets/tok"][0] == "tmpfs"
    assert mounts["/run/secrets/tok"][1].split(",")[0] == "ro"
    assert mounts["/scratch"][0] == "tmpfs"
    assert "size=1024k" in mounts["/scratch"][1].split(",")
    assert (dest / "secret-stat").read_text().split("\n")[:2] == ["440 1000 50", "read-only"]
    assert (dest / "scratch-fill").read_text() == "full\n"
    assert not (dest / "scratch").exists() or os.listdir(dest / "scratch") == []
    assert source.read_text() == token


def test_a_bad_tmpfs_size_is_a_positioned_error(tmp_path, busybox_store):
    import pytest

    from builder.errors import PlanError

    context = tmp_path / "ctx"
    context.mkdir()
    with pytest.raises(PlanError, match="invalid value for size") as caught:
        builder.build(context, buildfile_text="FROM busybox\nRUN --mount=type=tmpfs,target=/t,size=lots true\n",
                      root=busybox_store.root)
    assert caught.value.pos.line == 2
