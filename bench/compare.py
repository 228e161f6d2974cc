"""Our builder against `docker build` (BuildKit) and `buildah bud`, side by side, in one run.

Three workloads on the same busybox base (one docker-archive loaded into each builder):
  small     ARG, ENV, COPY of a few files, RUN
  parallel  three independent stages doing work, joined by COPY --from
  big       10,000 small files + 16 x 16 MiB random files, COPY . then RUN over them
Cases: cold (empty cache), no-op (nothing changed), edit (one small file changed). Each case is
timed `--repeat` times (median kept). With the big workload, also the first export of its image
as an OCI tar with zstd layers, against `tar | zstd -T0` of the same files. Printed: a table of seconds, peak RSS and ours/BuildKit;
written: bench/results/compare.json and the chart docs/benchmarks.svg.

    python3 bench/compare.py [--repeat 3] [--work /tmp/compare-bench] [--only small,big]

Needs root, busybox-static, and for the others dockerd (../shared/anchors/start-dockerd.sh;
/usr/bin/docker with BuildKit) and buildah; a builder that is missing is left out, not faked.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
DOCKER = "/usr/bin/docker"  # Debian's client, with BuildKit; another one may come first on PATH
# ext4 skips inodes freed in the last 30 s when it makes a file (`recently_deleted`): right after
# a reset deleted a store, creating 10,000 files takes several times as long, for any builder.
SETTLE_AFTER_RESET = 40
SETTLE_SECONDS = 5

WORKLOADS = {
    "small": """\
FROM busybox:bench
ARG VERSION=1
ENV APP=/app MODE=bench
COPY app/ /app/
RUN echo "$VERSION $MODE" > /app/built && ls /app > /app/listing
""",
    "parallel": """\
FROM busybox:bench AS one
RUN dd if=/dev/urandom of=/blob bs=1M count=24 2>/dev/null && sha256sum /blob > /sum
FROM busybox:bench AS two
RUN dd if=/dev/urandom of=/blob bs=1M count=24 2>/dev/null && md5sum /blob > /sum
FROM busybox:bench AS three
RUN dd if=/dev/urandom of=/blob bs=1M count=24 2>/dev/null && sha1sum /blob > /sum
FROM busybox:bench
COPY --from=one /sum /one
COPY --from=two /sum /two
COPY --from=three /sum /three
""",
    "big": """\
FROM busybox:bench
COPY . /ctx
RUN find /ctx -type f | wc -l > /count
""",
}
CASES = {"small": ("cold", "no-op", "edit"), "parallel": ("cold", "no-op"), "big": ("cold", "no-op", "edit")}
EDITED = {"small": "app/config.txt", "big": "small/d042/f00042.txt"}


def make_context(workload: str, root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "Buildfile").write_text(WORKLOADS[workload])
    if workload == "small":
        (root / "app").mkdir()
        for name in ("config.txt", "main.sh", "README"):
            (root / "app" / name).write_text(f"{name}\n" * 20)
    elif workload == "big":
        for index in range(10_000):
            folder = root / "small" / f"d{index % 100:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{index:05d}.txt").write_text(f"file {index}\n" * 8)
        (root / "large").mkdir()
        for index in range(16):
            with open(root / "large" / f"blob{index:02d}.bin", "wb") as out:
                out.write(os.urandom(16 << 20))


_PEAK_WRAPPER = (
    "import resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds, and the peak RSS (MiB) of the largest process the command waited for."""
    started = time.monotonic()
    completed = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *command], capture_output=True, text=True,
                               env=env)
    seconds = time.monotonic() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    return seconds, int(completed.stderr.strip().splitlines()[-1]) / 1024


@dataclass
class Builder:
    name: str
    build: Callable[[Path], list[str]]  # the build command for a context
    reset: Callable[[], None]  # empty the build cache (the base image stays)
    env: dict[str, str] | None = None


def ours(work: Path, archive: Path) -> Builder:
    store = work / "ours-store"
    # As an installed package runs: from compiled bytecode (a pip install writes it).
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(REPO)
    base = [sys.executable, "-m", "builder.cli", "--root", str(store)]

    def reset() -> None:
        shutil.rmtree(store, ignore_errors=True)
        subprocess.run([*base, "load", "-i", str(archive)], check=True, capture_output=True, env=env)
        subprocess.run([*base, "tag", "busybox:local", "busybox:bench"], check=True, capture_output=True, env=env)

    return Builder("ours", lambda context: [*base, "build", "--progress", "quiet", "--network", "host",
                                            "-t", "bench", str(context)], reset, env)


def buildkit(archive: Path) -> Builder | None:
    if not os.path.exists(DOCKER) or subprocess.run([DOCKER, "info"], capture_output=True).returncode != 0:
        return None
    subprocess.run([DOCKER, "load", "-i", str(archive)], check=True, capture_output=True)
    subprocess.run([DOCKER, "tag", "busybox:local", "busybox:bench"], check=True, capture_output=True)

    def reset() -> None:
        subprocess.run([DOCKER, "rmi", "-f", "bench"], capture_output=True)
        subprocess.run([DOCKER, "builder", "prune", "-af"], check=True, capture_output=True)

    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    return Builder("BuildKit", lambda context: [DOCKER, "build", "-q", "--network", "host", "-t", "bench",
                                                "-f", str(context / "Buildfile"), str(context)], reset, env)


def buildah(work: Path, archive: Path) -> Builder | None:
    if shutil.which("buildah") is None:
        return None
    storage = ["--root", str(work / "buildah-root"), "--runroot", str(work / "buildah-run"), "--storage-driver",
               "overlay"]

    def reset() -> None:
        subprocess.run(["buildah", *storage, "rmi", "-af"], capture_output=True)
        subprocess.run(["buildah", *storage, "pull", f"docker-archive:{archive}"], check=True, capture_output=True)
        image = subprocess.run(["buildah", *storage, "images", "-q"], capture_output=True, text=True,
                               check=True).stdout.split()[0]
        subprocess.run(["buildah", *storage, "tag", image, "busybox:bench"], check=True, capture_output=True)

    return Builder("buildah", lambda context: ["buildah", *storage, "bud", "--isolation", "chroot", "--layers",
                                               "--pull-never", "--network", "host", "-q", "-t", "bench",
                                               "-f", str(context / "Buildfile"), str(context)], reset)


def make_base_archive(work: Path) -> Path:
    """The busybox base as a docker-archive, so every builder starts from the same bytes."""
    rootfs = work / "busybox-rootfs.tar"
    subprocess.run(["sh", str(REPO / "examples/busybox/make-rootfs.sh"), str(rootfs)], check=True, capture_output=True)
    store = work / "seed-store"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "builder.cli", "--root", str(store)]
    subprocess.run([*base, "import", str(rootfs), "busybox:local"], check=True, capture_output=True, env=env)
    archive = work / "busybox.docker.tar"
    subprocess.run([*base, "save", "-o", str(archive), "busybox:local"], check=True, capture_output=True, env=env)
    return archive


def settle(seconds: float = SETTLE_SECONDS) -> None:
    """Let the disk catch up before a timed run (see SETTLE_AFTER_RESET), whichever builder it is."""
    subprocess.run(["sync"], check=True)
    time.sleep(seconds)


def run_case(builder: Builder, workload: str, case: str, context: Path) -> tuple[float, float]:
    command = builder.build(context)
    if case == "cold":
        builder.reset()
        settle(SETTLE_AFTER_RESET)
        return timed(command, builder.env)
    timed(command, builder.env)  # warm: the case starts from a built image
    if case == "no-op":
        settle()
        return timed(command, builder.env)
    edited = context / EDITED[workload]
    original = edited.read_text()
    edited.write_text(original + f"edit {time.time_ns()}\n")
    settle()
    try:
        return timed(command, builder.env)
    finally:
        edited.write_text(original)


def export_case(builder: Builder, context: Path, work: Path, repeat: int) -> dict[str, dict[str, list[float]]]:
    """The big image exported as an OCI tar with zstd layers, the first time (the build itself is
    cached; the layers are compressed now), against `tar | zstd -T0` of the same files."""
    dest, reference = work / "export.oci.tar", work / "export.tar.zst"
    rootfs = work / "export-rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    builder.reset()
    subprocess.run([*builder.build(context), "-o", f"type=local,dest={rootfs}"], check=True, capture_output=True,
                   env=builder.env)
    ours_runs, reference_runs = [], []
    for _ in range(repeat):
        builder.reset()
        subprocess.run(builder.build(context), check=True, capture_output=True, env=builder.env)
        dest.unlink(missing_ok=True)
        settle()
        ours_runs.append(timed([*builder.build(context), "-o", f"type=oci,dest={dest},compression=zstd"],
                               builder.env))
        reference.unlink(missing_ok=True)
        settle()
        reference_runs.append(timed(["sh", "-c", f"tar -C {rootfs} -cf - . | zstd -q -T0 -3 > {reference}"]))
    dest.unlink(missing_ok=True)
    reference.unlink(missing_ok=True)
    shutil.rmtree(rootfs, ignore_errors=True)
    return {"ours": {"seconds": [r[0] for r in ours_runs], "peak_mib": [r[1] for r in ours_runs]},
            "tar | zstd -T0": {"seconds": [r[0] for r in reference_runs],
                               "peak_mib": [r[1] for r in reference_runs]}}


def svg_chart(ratios: dict[str, float], path: Path) -> None:
    """A horizontal bar chart of ours/BuildKit per case, with the 1.0 line (no plotting library)."""
    bar_height, gap, left, width = 22, 8, 150, 420
    top = 40
    scale = max([2.0, *ratios.values()]) * 1.05
    height = top + len(ratios) * (bar_height + gap) + 30
    rows = []
    for index, (label, ratio) in enumerate(ratios.items()):
        y = top + index * (bar_height + gap)
        length = width * ratio / scale
        colour = "#2a9d8f" if ratio <= 1.0 else "#e76f51"
        rows.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{label}</text>'
                    f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar_height}" fill="{colour}"/>'
                    f'<text x="{left + length + 6:.1f}" y="{y + 15}">{ratio:.2f}x</text>')
    one = left + width / scale
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{height}" '
        'font-family="sans-serif" font-size="13">'
        f'<text x="{left}" y="20" font-weight="bold">time ours / BuildKit (median; left of the line is faster)</text>'
        + "".join(rows)
        + f'<line x1="{one:.1f}" y1="{top - 6}" x2="{one:.1f}" y2="{height - 24}" stroke="black" '
          'stroke-dasharray="4 3"/>'
        f'<text x="{one:.1f}" y="{height - 8}" text-anchor="middle">1.0</text></svg>\n')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/compare-bench"))
    parser.add_argument("--only", default="small,parallel,big")
    parser.add_argument("--builders", default="ours,BuildKit,buildah")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    archive = make_base_archive(args.work)
    available = [b for b in (ours(args.work, archive), buildkit(archive), buildah(args.work, archive))
                 if b is not None and b.name in args.builders.split(",")]
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    for workload in args.only.split(","):
        context = args.work / f"context-{workload}"
        make_context(workload, context)
        for case in CASES[workload]:
            label = f"{workload} {case}"
            for builder in available:
                runs = [run_case(builder, workload, case, context) for _ in range(args.repeat)]
                results.setdefault(label, {})[builder.name] = {"seconds": [r[0] for r in runs],
                                                               "peak_mib": [r[1] for r in runs]}
                print(f"{label:<16} {builder.name:<9} {statistics.median(r[0] for r in runs):7.2f} s", flush=True)
    export = None
    if "big" in args.only.split(",") and any(b.name == "ours" for b in available):
        export = export_case(next(b for b in available if b.name == "ours"), args.work / "context-big", args.work,
                             args.repeat)
        for name, data in export.items():
            print(f"{'big export zstd':<16} {name:<9} {statistics.median(data['seconds']):7.2f} s", flush=True)
    print(f"\nmedians of {args.repeat}; peak RSS of the largest process each command waited for\n")
    names = [b.name for b in available]
    print(f"| case | {' | '.join(names)} | ours / BuildKit | ours / buildah |")
    print(f"| --- | {' | '.join('---:' for _ in names)} | ---: | ---: |")
    ratios: dict[str, float] = {}
    for label, by_builder in results.items():
        median = {name: statistics.median(data["seconds"]) for name, data in by_builder.items()}
        peak = {name: max(data["peak_mib"]) for name, data in by_builder.items()}
        cells = [f"{median[n]:.2f} s / {peak[n]:.0f} MiB" for n in names]
        vs_buildkit = median["ours"] / median["BuildKit"] if "BuildKit" in median else None
        vs_buildah = median["ours"] / median["buildah"] if "buildah" in median else None
        if vs_buildkit is not None:
            ratios[label] = vs_buildkit
        print(f"| {label} | {' | '.join(cells)} | "
              f"{'' if vs_buildkit is None else f'{vs_buildkit:.2f}x'} | {'' if vs_buildah is None else f'{vs_buildah:.2f}x'} |")
    if export is not None:
        ours_s, ref_s = (statistics.median(export[n]["seconds"]) for n in ("ours", "tar | zstd -T0"))
        print(f"\n| export (big, OCI tar, zstd) | ours | tar \\| zstd -T0 | ours / tar \\| zstd |\n| --- | ---: | ---: | ---: |\n"
              f"| first export, build cached | {ours_s:.2f} s / {max(export['ours']['peak_mib']):.0f} MiB | "
              f"{ref_s:.2f} s | {ours_s / ref_s:.2f}x |")
        results["big export zstd"] = export
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "compare.json").write_text(json.dumps(results, indent=2))
    # The chart in docs/ shows a whole run: a partial one (--only, --builders) leaves it alone.
    if ratios and set(args.only.split(",")) == set(WORKLOADS) and len(ratios) == sum(map(len, CASES.values())):
        svg_chart(ratios, REPO / "docs" / "benchmarks.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
