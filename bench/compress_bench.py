#!/usr/bin/env python3
"""Benchmark layer compression: write_layer (gzip, zstd; 1 thread and all cores) against
`tar | gzip`, `tar | pigz` and `tar | zstd -T0` on the same directory.

    python3 bench/compress_bench.py                 # generate ~1 GiB of mixed data in a temp dir
    python3 bench/compress_bench.py --size-mib 64   # small run
    python3 bench/compress_bench.py --dir /some/tree

Not run by the test suite. Throughput is uncompressed tar bytes per second.
"""
from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builder.layer import write_layer  # noqa: E402

MIB = 1 << 20
_LETTERS = b"abcdefghijklmnopqrstuvwxyz"


def _text_pool(rng: random.Random, blocks: int) -> list[bytes]:
    words = [bytes(rng.choice(_LETTERS) for _ in range(rng.randint(2, 10))) for _ in range(4000)]
    pool = []
    for _ in range(blocks):
        lines = []
        size = 0
        while size < MIB:
            line = b" ".join(rng.choices(words, k=rng.randint(3, 14))) + b"\n"
            lines.append(line)
            size += len(line)
        pool.append(b"".join(lines)[:MIB])
    return pool


def _text_mib(rng: random.Random, pool: list[bytes]) -> bytes:
    # A random letter permutation keeps text statistics but defeats long-range repeats.
    perm = list(_LETTERS)
    rng.shuffle(perm)
    table = bytes.maketrans(_LETTERS, bytes(perm))
    return rng.choice(pool).translate(table)


def generate(root: Path, size_mib: int, seed: int = 42) -> None:
    """Mixed data: 40% text-like, 25% random, 15% zeros, 20% many small files."""
    rng = random.Random(seed)
    pool = _text_pool(rng, 8)
    root.mkdir(parents=True, exist_ok=True)
    plan = [("text", 0.40), ("random", 0.25), ("zeros", 0.15)]
    for kind, share in plan:
        remaining = int(size_mib * share)
        index = 0
        while remaining > 0:
            mib = min(remaining, rng.randint(4, 64))
            path = root / kind / f"{kind}-{index:04d}.bin"
            path.parent.mkdir(exist_ok=True)
            with open(path, "wb") as f:
                for _ in range(mib):
                    if kind == "text":
                        f.write(_text_mib(rng, pool))
                    elif kind == "random":
                        f.write(os.urandom(MIB))
                    else:
                        f.write(bytes(MIB))
            remaining -= mib
            index += 1
    small_budget = int(size_mib * 0.20) * MIB
    index = 0
    while small_budget > 0:
        size = rng.randint(200, 16 * 1024)
        path = root / "small" / f"d{index // 500:03d}" / f"f{index:06d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = _text_mib(rng, pool)
        start = rng.randrange(0, MIB - size)
        path.write_bytes(text[start : start + size])
        small_budget -= size
        index += 1


def _time(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _write_layer(src: Path, compression: str, threads: int) -> int:
    with open(os.devnull, "wb") as out:
        return write_layer(src, out, compression=compression, threads=threads, source_date_epoch=0).size


def _pipeline(src: Path, compressor: str) -> int:
    cmd = f"tar -C {shlex.quote(str(src))} -cf - . | {compressor} | wc -c"
    result = subprocess.run(cmd, shell=True, capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="benchmark this directory instead of generated data")
    parser.add_argument("--size-mib", type=int, default=1024, help="size of generated data (default 1024)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    temp: Path | None = None
    if args.dir:
        src = args.dir
    else:
        temp = Path(tempfile.mkdtemp(prefix="compress-bench-"))
        src = temp / "data"
        print(f"generating {args.size_mib} MiB of mixed data in {src} ...", file=sys.stderr)
        generate(src, args.size_mib)
    try:
        # Warm the page cache and measure the tar size once.
        _, tar_size = _time(lambda: _write_layer(src, "uncompressed", 1))
        runs: list[tuple[str, str, Callable[[], int]]] = [
            ("write_layer uncompressed", "1", lambda: _write_layer(src, "uncompressed", 1)),
            ("write_layer gzip -6", "1", lambda: _write_layer(src, "gzip", 1)),
            ("write_layer gzip -6", str(cores), lambda: _write_layer(src, "gzip", cores)),
            ("write_layer zstd -3", "1", lambda: _write_layer(src, "zstd", 1)),
            ("write_layer zstd -3", str(cores), lambda: _write_layer(src, "zstd", cores)),
            ("tar | gzip -6", "1", lambda: _pipeline(src, "gzip -6")),
            ("tar | pigz -6", str(cores), lambda: _pipeline(src, "pigz -6")),
            ("tar | zstd -3 -T0", str(cores), lambda: _pipeline(src, "zstd -q -3 -T0")),
        ]
        print(f"\nuncompressed tar: {tar_size / MIB:.1f} MiB, {cores} cores\n")
        header = f"{'method':<26} {'threads':>7} {'seconds':>8} {'MB/s':>8} {'out MiB':>9} {'ratio':>6}"
        print(header)
        print("-" * len(header))
        for name, threads, fn in runs:
            seconds, size = _time(fn)
            rate = tar_size / seconds / 1e6
            print(f"{name:<26} {threads:>7} {seconds:>8.2f} {rate:>8.1f} {size / MIB:>9.1f} {tar_size / size:>6.2f}")
    finally:
        if temp is not None and not args.keep:
            shutil.rmtree(temp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
