"""A fresh CI machine with a shared build cache: our `--cache-from` against a cold build, and
against BuildKit's `--cache-from` with an inline cache (BUILDKIT_INLINE_CACHE=1), one workload.

The workload (single stage, so BuildKit's inline cache, which holds the final image's steps,
covers every step): CPU work (gzip of random data), a COPY of a small app, generated files. A
Debian docker-registry on 127.0.0.1 holds the caches. Every timed build starts on a fresh
machine: for us an empty store holding only the base image; for BuildKit a dockerd of our own
(own data and exec roots, started for each run and stopped after), so no other daemon's cache is
touched and nothing is pruned. The base image is loaded before the clock starts.

Cases, each timed `--repeat` times (median kept):
  ours cold                   no cache
  ours warm (registry)        --cache-from a mode=max record; the image stays lazy (no output)
  ours warm + rootfs out      the same, with -o type=local: every layer is fetched and unpacked
  ours warm (inline)          --cache-from an image pushed with --cache-to type=inline
  BuildKit cold / warm        docker build, then with --cache-from the inline-cache image (the
                              daemon's image store needs every layer: they are downloaded)

    python3 bench/cache_bench.py [--repeat 3] [--work /tmp/cache-bench]

Needs root, busybox-static, docker-registry, and dockerd (Debian's docker.io) for the BuildKit rows.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from compare import make_base_archive

REPO = Path(__file__).resolve().parent.parent
DOCKER = "/usr/bin/docker"
REGISTRY = "/usr/bin/docker-registry"

WORKLOAD = """\
FROM busybox:cachebench
RUN dd if=/dev/urandom bs=1M count=48 2>/dev/null | gzip -6 > /blob.gz && sha256sum /blob.gz > /sum
COPY app/ /app/
RUN for i in $(seq 1 300); do head -c 2048 /dev/urandom > /app/gen$i; done && ls /app | wc -l > /count
ENV MODE=bench
RUN dd if=/dev/urandom bs=1M count=16 2>/dev/null | gzip -9 > /second.gz
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, what: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not come up")


class Registry:
    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        config = work / "registry.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                          f"storage:\n  filesystem:\n    rootdirectory: {work / 'registry'}\n"
                          f"http:\n  addr: {self.host}\n")
        self.process = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for(self._up, "docker-registry")

    def _up(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            conn.request("GET", "/v2/")
            conn.getresponse().read()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class Ours:
    def __init__(self, work: Path, archive: Path) -> None:
        self.work = work
        self.archive = archive
        self.env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
        self.env["PYTHONPATH"] = str(REPO)

    def fresh(self, name: str) -> list[str]:
        """An empty store holding only the base image: a new CI machine. Returns the CLI prefix."""
        store = self.work / f"store-{name}"
        shutil.rmtree(store, ignore_errors=True)
        base = [sys.executable, "-m", "builder.cli", "--root", str(store)]
        subprocess.run([*base, "load", "-i", str(self.archive)], check=True, capture_output=True, env=self.env)
        subprocess.run([*base, "tag", "busybox:local", "busybox:cachebench"], check=True, capture_output=True,
                       env=self.env)
        return base

    def build(self, base: list[str], context: Path, *extra: str) -> float:
        started = time.monotonic()
        completed = subprocess.run([*base, "build", "--progress", "quiet", "--network", "host", *extra, str(context)],
                                   capture_output=True, text=True, env=self.env)
        seconds = time.monotonic() - started
        if completed.returncode != 0:
            raise SystemExit(f"build failed:\n{completed.stderr[-3000:]}")
        return seconds


class PrivateDockerd:
    """A dockerd with its own roots: a fresh BuildKit for every run, the shared daemon untouched."""

    def __init__(self, work: Path, archive: Path) -> None:
        self.root = Path("/tmp") / f"cbd-{os.getpid()}"  # short: containerd's socket path lives below it
        self.socket = self.root / "d.sock"
        self.archive = archive
        self.process: subprocess.Popen | None = None
        self.retries = 0

    def docker(self, *args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        completed = subprocess.run([DOCKER, "-H", f"unix://{self.socket}", *args], env=env, **kwargs)
        if check and completed.returncode != 0:
            raise SystemExit(f"docker {args[0]} failed:\n{completed.stderr!r}"[-3000:])
        return completed

    def start(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir()
        self.process = subprocess.Popen(
            ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "x"),
             "--pidfile", str(self.root / "d.pid"), "-H", f"unix://{self.socket}", "--iptables=false",
             "--bridge=none", "--storage-driver=overlay2"],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "log", "wb"))
        wait_for(lambda: self.docker("info", capture_output=True).returncode == 0, "private dockerd")
        self.docker("load", "-i", str(self.archive), check=True, capture_output=True)
        self.docker("tag", "busybox:local", "busybox:cachebench", check=True, capture_output=True)

    def build(self, context: Path, *extra: str, fresh: bool = False) -> float:
        """One build (on a daemon started anew when `fresh`). dockerd 20.10 on a just-started daemon
        now and then fails a RUN with `stat /bin/sh: no such file` on an image it has: such a run
        is started over on a new daemon (at most twice) and counted in `retries`."""
        for attempt in range(3):
            if fresh:
                self.start()
                settle()
            started = time.monotonic()
            completed = self.docker("build", "-q", "--network", "host", *extra, "-f", str(context / "Buildfile"),
                                    str(context), capture_output=True, text=True)
            seconds = time.monotonic() - started
            if completed.returncode == 0:
                return seconds
            if "stat /bin/sh: no such file" not in completed.stderr or attempt == 2:
                raise SystemExit(f"docker build failed:\n{completed.stderr[-3000:]}")
            self.retries += 1
            fresh = True
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)
        self.process = None
        shutil.rmtree(self.root, ignore_errors=True)


def make_context(root: Path) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    (root / "app").mkdir(parents=True)
    (root / "Buildfile").write_text(WORKLOAD)
    for name in ("main.sh", "config.txt", "README"):
        (root / "app" / name).write_text(f"{name}\n" * 50)
    return root


def settle() -> None:
    subprocess.run(["sync"], check=True)
    time.sleep(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cache-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    archive = make_base_archive(args.work)
    context = make_context(args.work / "context")
    registry = Registry(args.work)
    ours = Ours(args.work, archive)
    cache_ref = f"{registry.host}/bench/ours-cache:1"
    inline_ref = f"{registry.host}/bench/ours-inline:1"
    times: dict[str, list[float]] = {}
    dockerd = None
    try:
        # Machine A fills the caches (not timed).
        ours.build(ours.fresh("A"), context, "--cache-to", f"type=registry,ref={cache_ref},mode=max",
                   "--cache-to", "type=inline", "-o", f"type=registry,name={inline_ref}")
        cases = {
            "ours cold": lambda: ours.build(ours.fresh("B"), context),
            "ours warm (registry)": lambda: ours.build(ours.fresh("B"), context, "--cache-from", cache_ref),
            "ours warm + rootfs out": lambda: ours.build(ours.fresh("B"), context, "--cache-from", cache_ref,
                                                         "-o", f"type=local,dest={args.work / 'rootfs'}"),
            "ours warm (inline)": lambda: ours.build(ours.fresh("B"), context, "--cache-from", inline_ref),
        }
        if shutil.which("dockerd") and os.path.exists(DOCKER):
            dockerd = PrivateDockerd(args.work, archive)
            buildkit_ref = f"{registry.host}/bench/buildkit-inline:1"
            dockerd.build(context, "--build-arg", "BUILDKIT_INLINE_CACHE=1", "-t", buildkit_ref, fresh=True)
            dockerd.docker("push", buildkit_ref, check=True, capture_output=True, text=True)

            def buildkit(*extra: str) -> float:
                return dockerd.build(context, *extra, fresh=True)  # type: ignore[union-attr]

            cases["BuildKit cold"] = lambda: buildkit()
            cases["BuildKit warm (inline)"] = lambda: buildkit("--cache-from", buildkit_ref)
        for label, run in cases.items():
            for _ in range(args.repeat):
                shutil.rmtree(args.work / "rootfs", ignore_errors=True)
                if not label.startswith("BuildKit"):
                    settle()
                times.setdefault(label, []).append(run())
            print(f"{label:<24} {statistics.median(times[label]):7.2f} s", flush=True)
    finally:
        if dockerd is not None:
            dockerd.stop()
        registry.stop()
    median = {label: statistics.median(runs) for label, runs in times.items()}
    retried = f"; BuildKit runs started over after dockerd's `stat /bin/sh` failure: {dockerd.retries}" if dockerd else ""
    print(f"\nmedians of {args.repeat}, each on a fresh machine (store or dockerd){retried}\n")
    print("| case | seconds |\n| --- | ---: |")
    for label, seconds in median.items():
        print(f"| {label} | {seconds:.2f} |")
    ratios = {"ours warm / ours cold": median["ours warm (registry)"] / median["ours cold"],
              "ours warm + rootfs out / ours cold": median["ours warm + rootfs out"] / median["ours cold"]}
    if "BuildKit warm (inline)" in median:
        ratios["ours warm (inline) / BuildKit warm (inline)"] = (median["ours warm (inline)"]
                                                                 / median["BuildKit warm (inline)"])
        ratios["ours warm + rootfs out / BuildKit warm (inline)"] = (median["ours warm + rootfs out"]
                                                                     / median["BuildKit warm (inline)"])
        ratios["BuildKit warm / BuildKit cold"] = median["BuildKit warm (inline)"] / median["BuildKit cold"]
    print("\n| ratio | |\n| --- | ---: |")
    for label, ratio in ratios.items():
        print(f"| {label} | {ratio:.2f}x |")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "cache.json").write_text(json.dumps({"seconds": times, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
