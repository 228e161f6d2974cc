"""Peak memory of our builder on a 1 GiB context: does it stay flat (issue 11: under 200 MiB)?

The context: 1 GiB of random data in 8 files of 128 MiB, plus 5,000 small files. Each command
runs in a fresh process and its peak RSS (the largest of it and its children) is printed: the
cold build (`COPY . /ctx` then a RUN over it), the no-op rebuild, the image exported as an OCI tar
with zstd layers, as a docker-archive (`save`) and as a rootfs dir (`-o type=local`).

    python3 bench/memory_bench.py [--work /tmp/memory-bench] [--limit-mib 200]

Needs root (the RUN step) and busybox-static for the base. Exits 1 when a command goes over the limit.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILDFILE = "FROM busybox:bench\nCOPY . /ctx\nRUN find /ctx -type f | wc -l > /count\n"
LARGE_FILES, LARGE_MIB, SMALL_FILES = 8, 128, 5_000

_PEAK_WRAPPER = (
    "import resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def make_context(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    (root / "large").mkdir(parents=True)
    (root / "Buildfile").write_text(BUILDFILE)
    chunk = 16 << 20
    for index in range(LARGE_FILES):
        with open(root / "large" / f"blob{index}.bin", "wb") as out:
            for _ in range((LARGE_MIB << 20) // chunk):
                out.write(os.urandom(chunk))
    for index in range(SMALL_FILES):
        folder = root / "small" / f"d{index % 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index:05d}.txt").write_text(f"file {index}\n" * 4)


def peak(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS in MiB of `command` (and its children)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *command], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started, int(done.stderr.strip().splitlines()[-1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/memory-bench"))
    parser.add_argument("--limit-mib", type=float, default=200.0)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    store = args.work / "store"
    cli = [sys.executable, "-m", "builder.cli", "--root", str(store)]
    rootfs = args.work / "busybox-rootfs.tar"
    subprocess.run(["sh", str(REPO / "examples/busybox/make-rootfs.sh"), str(rootfs)], check=True, capture_output=True)
    subprocess.run([*cli, "import", str(rootfs), "busybox:bench"], check=True, capture_output=True, env=env)
    context = args.work / "context"
    make_context(context)
    build = [*cli, "build", "--progress", "quiet", "--network", "host", "-t", "membench", str(context)]
    cases = {
        "cold build": build,
        "no-op rebuild": build,
        "export OCI tar, zstd": [*build, "-o", f"type=oci,dest={args.work / 'out.oci.tar'},compression=zstd"],
        "save (docker-archive)": [*cli, "save", "-o", str(args.work / "out.docker.tar"), "membench"],
        "-o type=local": [*build, "-o", f"type=local,dest={args.work / 'rootfs'}"],
    }
    over = []
    print(f"context: {LARGE_FILES} x {LARGE_MIB} MiB + {SMALL_FILES} small files\n")
    print("| command | seconds | peak RSS |\n| --- | ---: | ---: |")
    for label, command in cases.items():
        seconds, mib = peak(command, env)
        print(f"| {label} | {seconds:.2f} | {mib:.0f} MiB |", flush=True)
        if mib > args.limit_mib:
            over.append(label)
    shutil.rmtree(args.work, ignore_errors=True)
    if over:
        print(f"\nover {args.limit_mib:.0f} MiB: {', '.join(over)}")
        return 1
    print(f"\nevery command under {args.limit_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
