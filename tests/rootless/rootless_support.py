"""Ordinary users for the rootless tests, and running the builder as them.

Each session makes two users (removed again at its end, their /etc/subuid and /etc/subgid
entries with them): one with a range of 65536 subordinate ids, one with none. They run a copy of
the code from a directory every user can read (the checkout may sit under a private home), with
the test venv's python (made from Debian's /usr/bin/python3, so every user can run it).

A RUN's default network needs /dev/net/tun, which a machine may keep from ordinary users (mode
0600). Commands that need it run in a private mount namespace where a 0666 node of the same
device is bound over /dev/net/tun, so the host's own node and mode are never touched.
"""
from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parents[2]
SUBID_COUNT = 65536


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def _free_subid_start() -> int:
    """A start above every range /etc/subuid and /etc/subgid hand out already."""
    end = 100000
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        if path.exists():
            for line in path.read_text().splitlines():
                fields = line.split(":")
                if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                    end = max(end, int(fields[1]) + int(fields[2]))
    return end + SUBID_COUNT  # a gap, in case another session adds one meanwhile


@dataclass
class User:
    name: str
    uid: int
    gid: int
    base: Path  # a dir of the session's, readable by everyone
    code: Path  # the copy of the repo the user runs
    tun: Path  # a 0666 /dev/net/tun node to bind for commands that need it
    subids: range | None = None  # the host ids of its subordinate range

    def own_dir(self, name: str) -> Path:
        """A fresh dir owned by the user (their HOME, stores, outputs live in such dirs)."""
        path = self.base / f"{self.name}-{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir(mode=0o755)
        os.chown(path, self.uid, self.gid)
        return path

    def env(self, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home),
                "USER": self.name, "LOGNAME": self.name, "XDG_DATA_HOME": str(home / "xdg"),
                "PYTHONPATH": str(self.code), "LC_ALL": "C.UTF-8", **(extra or {})}

    def command(self, argv: list[str], *, home: Path, env: dict[str, str] | None = None,
                tun: bool = False, setup: str | None = None) -> list[str]:
        """argv to run `argv` as this user with a clean environment. With `tun` a usable
        /dev/net/tun, with `setup` that shell snippet, both done by root in a private mount
        namespace the user's command then runs in."""
        inner = ["runuser", "-u", self.name, "--", "env", "-i",
                 *[f"{key}={value}" for key, value in self.env(home, env).items()], *argv]
        steps = ([f"mount --bind {self.tun} /dev/net/tun"] if tun else []) + ([setup] if setup else [])
        if not steps:
            return inner
        script = " && ".join(steps) + ' && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *inner]

    def run(self, argv: list[str], *, home: Path, cwd: Path | None = None, env: dict[str, str] | None = None,
            tun: bool = False, setup: str | None = None, timeout: float = 600,
            stdin: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv, home=home, env=env, tun=tun, setup=setup), cwd=cwd or home,
                              input=stdin, capture_output=True, timeout=timeout)

    def builder_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "builder.cli", *args]

    def builder(self, *args: str, home: Path, cwd: Path | None = None, env: dict[str, str] | None = None,
                tun: bool = False, setup: str | None = None, timeout: float = 600,
                check: bool = True) -> subprocess.CompletedProcess:
        """`builder ARGS` as this user; with check, a failure fails the test showing stderr."""
        done = self.run(self.builder_argv(*args), home=home, cwd=cwd, env=env, tun=tun, setup=setup,
                        timeout=timeout)
        if check:
            assert done.returncode == 0, (f"builder {' '.join(args)} as {self.name} failed:\n"
                                          + done.stderr.decode(errors="replace")[-4000:])
        return done


class Users:
    """The session's users and the shared files they read."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="rootless-"))
        os.chmod(self.base, 0o755)
        self.code = self.base / "code"
        for name in ("builder", "grammar", "examples", "tests/fixtures"):
            shutil.copytree(REPO / name, self.code / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "tests/conftest.py"):
            shutil.copy2(REPO / name, self.code / name)
        self.tun = self.base / "tun"
        os.mknod(self.tun, stat.S_IFCHR | 0o666, os.makedev(10, 200))
        os.chmod(self.tun, 0o666)
        for path in [self.code, *self.code.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o044 | (0o011 if path.is_dir() else 0))
        tag = uuid.uuid4().hex[:6]
        self.made: list[str] = []
        self.with_subids = self._make(f"brl{tag}s", subids=True)
        self.without_subids = self._make(f"brl{tag}n", subids=False)

    def _make(self, name: str, *, subids: bool) -> User:
        # No home of its own and no automatic ranges: ranges are added (or not) on purpose.
        _run("useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh",
             "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", name)
        self.made.append(name)
        ids = None
        if subids:
            start = _free_subid_start()
            ids = range(start, start + SUBID_COUNT)
            _run("usermod", "--add-subuids", f"{ids[0]}-{ids[-1]}", "--add-subgids", f"{ids[0]}-{ids[-1]}", name)
        entry = pwd.getpwnam(name)
        return User(name, entry.pw_uid, entry.pw_gid, self.base, self.code, self.tun, ids)

    def close(self) -> None:
        for name in self.made:
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
            # userdel also drops the user's /etc/subuid and /etc/subgid entries.
            subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def oci_archive_layers(archive: Path) -> list[dict[str, tarfile.TarInfo]]:
    """The members of every layer of the single image in an OCI archive, lowest layer first."""
    with tarfile.open(archive) as outer:
        index = json.load(outer.extractfile("index.json"))  # type: ignore[arg-type]
        manifest_digest = index["manifests"][0]["digest"]

        def blob(digest: str) -> bytes:
            member = outer.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
            assert member is not None
            return member.read()

        manifest = json.loads(blob(manifest_digest))
        layers = []
        for descriptor in manifest["layers"]:
            data = blob(descriptor["digest"])
            if descriptor["mediaType"].endswith("+zstd"):
                data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
            with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                layers.append({m.name: m for m in inner.getmembers()})
        return layers


def user_namespaces_work() -> bool:
    """Whether an ordinary user may make a user namespace here (probed as `nobody`)."""
    probe = subprocess.run(["runuser", "-u", "nobody", "--", "unshare", "--user", "true"], capture_output=True)
    return probe.returncode == 0


def processes_of(user: User) -> list[str]:
    """`pid command` of every process running as the user or one of its subordinate ids."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        real = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if real == user.uid or (user.subids is not None and real in user.subids):
            found.append(f"{entry.name} {command}")
    return found


def mounts_naming(text: str) -> list[str]:
    """Every mount, in any process's mount namespace, whose line mentions `text`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.update(line for line in (entry / "mountinfo").read_text().splitlines() if text in line)
            except OSError:
                continue
    return sorted(found)
