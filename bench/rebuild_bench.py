"""Rebuild speed on a 10,000-file context: cold build, no-op rebuild, one-file-change rebuild.

Runs our builder and, when present on this machine, `buildah bud --layers` and `docker build`
(BuildKit) on the same context and base, and prints times and peak memory side by side, with
the ratio to ours. Needs root (RUN steps) and Debian's busybox-static for the base image.

    python3 bench/rebuild_bench.py [--files 10000] [--work /tmp/rebuild-bench]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILDFILE = """\
FROM busybox:local
COPY . /ctx
RUN find /ctx -type f | wc -l > /count
"""


def make_context(root: Path, files: int) -> None:
    root.mkdir(parents=True)
    (root / "Buildfile").write_text(BUILDFILE)
    for index in range(files):
        folder = root / f"dir{index % 100:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"file{index:05d}.txt").write_text(f"file {index}\n" * 8)


_PEAK_WRAPPER = (
    "import resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds, and the peak RSS (MiB) of the largest process the command waited for."""
    started = time.monotonic()
    completed = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *command], capture_output=True, text=True, env=env)
    seconds = time.monotonic() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stderr[-2000:]}")
    peak_kib = int(completed.stderr.strip().splitlines()[-1])
    return seconds, peak_kib / 1024


def make_base_archive(work: Path) -> Path:
    """The busybox base as a docker-archive, so every builder starts from the same bytes."""
    rootfs_tar = work / "busybox-rootfs.tar"
    subprocess.run(["sh", str(REPO / "examples/busybox/make-rootfs.sh"), str(rootfs_tar)], check=True, capture_output=True)
    store = work / "seed-store"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "builder.cli", "--root", str(store), "import", str(rootfs_tar), "busybox:local"],
                   check=True, capture_output=True, env=env)
    archive = work / "busybox.docker.tar"
    subprocess.run([sys.executable, "-m", "builder.cli", "--root", str(store), "save", "-o", str(archive), "busybox:local"],
                   check=True, capture_output=True, env=env)
    return archive


def run_ours(work: Path, context: Path, archive: Path) -> dict[str, tuple[float, float]]:
    store = work / "ours-store"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "builder.cli", "--root", str(store)]
    subprocess.run([*base, "load", "-i", str(archive)], check=True, capture_output=True, env=env)
    build = [*base, "build", "--progress", "quiet", "-t", "bench", str(context)]
    return measure(build, context, env)


def run_buildah(work: Path, context: Path, archive: Path) -> dict[str, tuple[float, float]] | None:
    if shutil.which("buildah") is None:
        return None
    storage = ["--root", str(work / "buildah-root"), "--runroot", str(work / "buildah-run"), "--storage-driver", "vfs"]
    subprocess.run(["buildah", *storage, "pull", f"docker-archive:{archive}"], check=True, capture_output=True)
    subprocess.run(["buildah", *storage, "tag", subprocess.run(
        ["buildah", *storage, "images", "-q"], capture_output=True, text=True, check=True).stdout.split()[0],
        "busybox:local"], check=True, capture_output=True)
    build = ["buildah", *storage, "bud", "--isolation", "chroot", "--layers", "--pull-never", "-q", "-f", str(context / "Buildfile"),
             "-t", "bench", str(context)]
    return measure(build, context, None)


def run_docker(context: Path, archive: Path) -> dict[str, tuple[float, float]] | None:
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return None
    subprocess.run(["docker", "load", "-i", str(archive)], check=True, capture_output=True)
    build = ["docker", "build", "-q", "-f", str(context / "Buildfile"), "-t", "bench", str(context)]
    return measure(build, context, {**os.environ, "DOCKER_BUILDKIT": "1"})


def measure(build: list[str], context: Path, env: dict[str, str] | None) -> dict[str, tuple[float, float]]:
    changed = context / "dir042" / "file00042.txt"
    original = changed.read_text()
    results = {"cold build": timed(build, env), "no-op rebuild": timed(build, env)}
    changed.write_text(original + "changed\n")
    results["one-file change"] = timed(build, env)
    changed.write_text(original)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rebuild-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    archive = make_base_archive(args.work)
    table: dict[str, dict[str, tuple[float, float]] | None] = {}
    for name in ("ours", "buildah", "docker"):
        context = args.work / f"context-{name}"
        make_context(context, args.files)
        if name == "ours":
            table[name] = run_ours(args.work, context, archive)
        elif name == "buildah":
            table[name] = run_buildah(args.work, context, archive)
        else:
            table[name] = run_docker(context, archive)
    print(f"{args.files}-file context, same base and Buildfile, one run each on this machine\n")
    print(f"{'builder':<10}{'case':<18}{'seconds':>9}{'peak MiB':>10}{'time / ours':>13}")
    for name, results in table.items():
        if results is None:
            print(f"{name:<10}not available on this machine")
            continue
        for case, (seconds, peak) in results.items():
            ours = table["ours"][case][0]
            print(f"{name:<10}{case:<18}{seconds:>9.2f}{peak:>10.0f}{seconds / ours:>13.2f}")
    print(json.dumps({name: results for name, results in table.items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
