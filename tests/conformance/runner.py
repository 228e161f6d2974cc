"""Build one case with our builder and with `docker build` (BuildKit), and compare the images.

Both builders start from byte-identical bases: a busybox-static rootfs (tests/fixtures/busybox.py)
imported into our store, saved from it as a docker-archive, and `docker load`ed from that archive.
Every case is built in one store (ours) and one daemon (BuildKit's cache), so the base is made once.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .cases import Case, write_context
from .compare import Difference, compare_history, compare_images, read_docker_archive

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
DOCKER = "/usr/bin/docker"  # Debian's client, with BuildKit; another docker on PATH may lack it
PREFIX = "conformance-"
BASE_TAG = f"{PREFIX}busybox:latest"
BARE_TAG = f"{PREFIX}bare:latest"
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
BASE_CMD = ("sh",)
SOURCE_DATE_EPOCH = 1700000000
# Written into the base as /etc/conformance-base, so its layer is this suite's own: no other user of
# the daemon shares it. Raise it if dockerd's BuildKit ever holds a stale cache record for the base
# (a build FROM it then fails with "/bin/sh: no such file or directory"): a new layer gets new records.
BASE_GENERATION = 2
# The longest a case's `docker build` may take; a hung build must not hang the suite.
DOCKER_TIMEOUT = 180
BUILDKIT_ATTEMPTS = 3
# How dockerd's BuildKit fails when it, not the Dockerfile, is at fault: a RUN, COPY or ADD finds its
# root file system or context missing. Seen when its build cache is inconsistent (dockerd's log
# says "index pointing to missing record"); a healthy daemon shows none of these.
_REFERENCE_FAULTS = (
    re.compile(r'exec: "[^"]*": stat \S*: no such file or directory'),
    re.compile(r"/var/lib/docker/\S*: no such file or directory"),
    re.compile(r"Error processing tar file.*: no such file or directory"),
)
# ...or leaves in the layer the empty files runc mounted files on: /etc/hosts, /etc/resolv.conf, secrets.
_STRAY_MOUNT_STUBS = re.compile(r"/etc/hosts|/etc/resolv\.conf|/run/secrets/[^/]+")


def unavailable() -> str | None:
    """Why the suite cannot run here, or None. CI has no dockerd: the suite skips there."""
    if os.geteuid() != 0:
        return "needs root (namespaces and overlayfs for our builder, the docker socket for BuildKit)"
    if not os.path.exists(DOCKER):
        return f"{DOCKER} is not installed"
    if not Path("/bin/busybox").exists():
        return "/bin/busybox missing: install Debian's busybox-static"
    try:
        # `docker version` says plainly why it cannot reach the daemon; `docker info` does not.
        version = subprocess.run([DOCKER, "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                 text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "`docker version` timed out: dockerd does not answer"
    if version.returncode != 0 or not version.stdout.strip():
        why = next((line for line in version.stderr.splitlines() if line.strip()), "no answer")
        return f"no dockerd ({why.strip()[:200]}); start it with /work/shared/anchors/start-dockerd.sh"
    return None


def docker_server_version() -> str:
    done = subprocess.run([DOCKER, "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True)
    return done.stdout.strip()


@dataclass
class CaseResult:
    name: str
    differences: list[Difference] = field(default_factory=list)
    history: list[Difference] = field(default_factory=list)
    seconds_ours: float = 0.0
    seconds_buildkit: float = 0.0
    note: str = ""
    compared: bool = False  # both built, so the images were compared
    attempts: int = 1  # how many times BuildKit built it
    earlier: list[str] = field(default_factory=list)  # what the attempts before the last one showed


class BuildFailed(Exception):
    pass


@dataclass
class Workbench:
    """The shared state of one run: a work dir, our store with the base, the base in dockerd."""

    work: Path
    store_root: Path

    @classmethod
    def prepare(cls, work: Path) -> "Workbench":
        """Make the bases in a new store in `work` (created; must be empty) and load them into dockerd."""
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            raise ValueError(f"{work} is not empty")
        bench = cls(work=work, store_root=work / "store")
        archive = bench.make_base_archive()
        # The bases stay loaded after the run: removing an image BuildKit's cache still refers to
        # leaves that cache pointing at deleted layers (later builds FROM it then see an empty
        # rootfs). Loading the same archive again is a no-op.
        loaded = subprocess.run([DOCKER, "load", "-i", str(archive)], capture_output=True, text=True)
        if loaded.returncode != 0:
            raise RuntimeError(f"docker load failed: {loaded.stderr}")
        return bench

    def make_base_archive(self) -> Path:
        sys.path.insert(0, str(TESTS))  # `fixtures` is imported as the other test areas do
        from fixtures.busybox import FIXED_MTIME, make_busybox_rootfs

        from builder.image.importer import import_rootfs
        from builder.image.store import Store

        rootfs = make_busybox_rootfs(self.work / "base-rootfs")
        marker = rootfs / "etc" / "conformance-base"
        marker.write_text(f"conformance suite base, generation {BASE_GENERATION}\n")
        marker.chmod(0o644)
        for path in (marker, marker.parent):
            os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        store = Store.open(self.store_root)

        def edit(config: dict) -> None:
            config.setdefault("config", {}).update({"Env": list(BASE_ENV), "Cmd": list(BASE_CMD)})

        base = import_rootfs(store, rootfs, BASE_TAG, edit_config=edit, source_date_epoch=SOURCE_DATE_EPOCH)
        bare = import_rootfs(store, rootfs, BARE_TAG, source_date_epoch=SOURCE_DATE_EPOCH)
        from builder.export.docker_archive import export_docker_archive

        archive = self.work / "base.docker.tar"
        export_docker_archive(store, [(base.manifest_digest, [BASE_TAG]), (bare.manifest_digest, [BARE_TAG])], archive)
        return archive

    def run(self, case: Case, retry_if: Callable[[CaseResult], bool] | None = None) -> CaseResult:
        """Build `case` both ways and compare. While `retry_if` says the result needs another look,
        BuildKit builds again (up to BUILDKIT_ATTEMPTS builds) and the last result is kept: a
        difference must show in every attempt to count (see is_reference_fault)."""
        context = self.work / "contexts" / case.name
        shutil.rmtree(context, ignore_errors=True)
        write_context(case, context)
        archives = self.work / "archives"
        archives.mkdir(exist_ok=True)
        ours_archive, theirs_archive = archives / f"{case.name}.ours.tar", archives / f"{case.name}.buildkit.tar"
        started = time.monotonic()
        # BuildKit builds in its daemon while ours builds here: the two overlap.
        docker = self.start_docker_build(case, context)
        ours_error = None
        try:
            self.build_ours(case, context, ours_archive)
        except BuildFailed as error:
            ours_error = str(error)
        seconds_ours = time.monotonic() - started
        earlier: list[str] = []
        for attempt in range(1, BUILDKIT_ATTEMPTS + 1):
            theirs_error = self.finish_docker_build(case, docker, theirs_archive)
            result = self.compare(case, ours_error, ours_archive, theirs_error, theirs_archive)
            result.seconds_ours, result.seconds_buildkit = seconds_ours, time.monotonic() - started
            result.attempts = attempt
            if retry_if is None or not retry_if(result) or attempt == BUILDKIT_ATTEMPTS:
                break
            earlier.append("; ".join(d.describe() for d in result.differences))
            log = theirs_archive.with_suffix(".log")
            if log.exists():
                log.rename(theirs_archive.with_suffix(f".attempt{attempt}.log"))
            docker = self.start_docker_build(case, context)
        if earlier:
            result.note = f"BuildKit built it {result.attempts} times"
            result.earlier = earlier
        return result

    def compare(self, case: Case, ours_error: str | None, ours_archive: Path, theirs_error: str | None,
                theirs_archive: Path) -> CaseResult:
        result = CaseResult(case.name)
        if ours_error or theirs_error:
            if not (ours_error and theirs_error):
                result.differences.append(Difference("build", "result", _outcome(ours_error), _outcome(theirs_error)))
            else:
                result.note = "both refused the build"
            return result
        ours, theirs = read_docker_archive(ours_archive), read_docker_archive(theirs_archive)
        result.compared = True
        result.differences = compare_images(ours, theirs)
        result.history = compare_history(ours.config, theirs.config)
        return result

    def build_ours(self, case: Case, context: Path, archive: Path) -> None:
        from builder.api import build
        from builder.errors import BuildError

        archive.unlink(missing_ok=True)
        try:
            build(context, root=self.store_root, tags=[self.tag(case)], outputs=[f"type=docker,dest={archive}"],
                  build_args=case.build_args, target=case.target, source_date_epoch=SOURCE_DATE_EPOCH,
                  network="host", secrets={name: context / path for name, path in case.secrets.items()})
        except BuildError as error:
            raise BuildFailed(error.render() if hasattr(error, "render") else str(error)) from None

    def tag(self, case: Case) -> str:
        return f"{PREFIX}{case.name}:latest"

    def start_docker_build(self, case: Case, context: Path) -> subprocess.Popen[str]:
        # --no-cache: each run compares what BuildKit does now, never a cache record from an earlier
        # run (or one another user of the daemon left stale).
        command = [DOCKER, "build", "--no-cache", "--progress", "plain", "--network", "host", "-t", self.tag(case)]
        for name, value in case.build_args.items():
            command += ["--build-arg", f"{name}={value}"]
        for name, path in case.secrets.items():
            command += ["--secret", f"id={name},src={context / path}"]
        if case.target:
            command += ["--target", case.target]
        command.append(str(context))
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def finish_docker_build(self, case: Case, docker: subprocess.Popen[str], archive: Path) -> str | None:
        try:
            output, _ = docker.communicate(timeout=DOCKER_TIMEOUT)
        except subprocess.TimeoutExpired:
            docker.kill()
            docker.communicate()
            return f"docker build timed out after {DOCKER_TIMEOUT} s"
        archive.with_suffix(".log").write_text(output)  # BuildKit's own account, for a failing case
        if docker.returncode != 0:
            return _last_error(output)
        archive.unlink(missing_ok=True)
        # The image stays tagged: removing an image BuildKit has just built while its cache still
        # refers to the layers leaves dockerd's build cache inconsistent ("index pointing to missing
        # record" in its log), and later builds then fail at random. The next run re-tags it.
        subprocess.run([DOCKER, "save", "-o", str(archive), self.tag(case)], check=True, capture_output=True)
        return None


def is_reference_fault(difference: Difference) -> bool:
    """A difference that says dockerd's BuildKit misbehaved rather than how it builds this case."""
    if difference.where == "build":
        return difference.ours == "built" and any(p.search(difference.buildkit) for p in _REFERENCE_FAULTS)
    return (_STRAY_MOUNT_STUBS.fullmatch(difference.where) is not None and difference.attribute == "presence"
            and difference.ours == "absent" and difference.buildkit == "file 0755 0:0 0B")


def _outcome(error: str | None) -> str:
    return "built" if error is None else "refused: " + error


def _last_error(output: str) -> str:
    """The line of `docker build --progress plain` output that says what went wrong: a sign of a
    reference fault when there is one (runc's own message comes before BuildKit's summary)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if any(pattern.search(line) for pattern in _REFERENCE_FAULTS):
            return line[:300]
    for line in reversed(lines):
        if "error" in line.lower() or "failed" in line.lower():
            return line[:300]
    return (lines[-1] if lines else "docker build failed")[:300]


def run_cases(bench: Workbench, cases: Sequence[Case],
              retry_if: Callable[[CaseResult], bool] | None = None) -> Iterator[CaseResult]:
    for case in cases:
        yield bench.run(case, retry_if)
