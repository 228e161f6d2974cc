"""Parse a generated 5,000-line Buildfile and print how long it took (seconds).

Run: python3 bench/parse_bench.py [--lines N] [--repeat R]
The first parse also loads the grammar (Lark's cache makes that fast after the first run);
the figure reported is the best of the repeats after that warm-up.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builder.parse import parse_buildfile  # noqa: E402

STAGE = [
    "FROM --platform=$BUILDPLATFORM golang:1.22-alpine AS build{n}",
    "ARG VERSION=1.{n}.0 TARGETOS TARGETARCH",
    "ENV CGO_ENABLED=0 GOFLAGS=\"-mod=readonly\" PATH=/go/bin:$PATH",
    "WORKDIR /src/{n}",
    "COPY --chown=1000:1000 --chmod=644 go.mod go.sum ./",
    "RUN --mount=type=cache,target=/go/pkg/mod \\",
    "    --mount=type=cache,target=/root/.cache/go-build \\",
    "    apt-get update && apt-get install -y --no-install-recommends \\",
    "      ca-certificates curl git && rm -rf /var/lib/apt/lists/*",
    "# a comment between instructions",
    "RUN <<EOF",
    "echo building {n}",
    "go build -o /out/app{n} ./cmd/app",
    "EOF",
    "LABEL org.opencontainers.image.version=\"${{VERSION}}\" stage=\"{n}\"",
    "EXPOSE 80{n:02d}/tcp 443",
    "HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD [\"curl\", \"-f\", \"http://localhost/\"]",
    "USER 1000:1000",
    "",
    "ENTRYPOINT [\"/out/app{n}\"]",
]


def generate(lines: int) -> str:
    out: list[str] = []
    n = 0
    while len(out) < lines:
        out.extend(line.format(n=n % 100) for line in STAGE)
        n += 1
    while out[lines - 1 :] and out[lines - 1].endswith("\\"):  # never cut inside a continuation
        lines += 1
    text = "\n".join(out[:lines]) + "\n"
    if text.count("RUN <<EOF") > text.count("\nEOF\n"):  # nor inside a heredoc
        text += "EOF\n"
    return text


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("--lines", type=int, default=5000)
    options.add_argument("--repeat", type=int, default=5)
    args = options.parse_args()
    text = generate(args.lines)
    start = time.perf_counter()
    buildfile = parse_buildfile(text, "bench.Buildfile")
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        parse_buildfile(text, "bench.Buildfile")
        best = min(best, time.perf_counter() - start)
    print(f"lines: {text.count(chr(10))}  instructions: {len(buildfile.instructions)}")
    print(f"first parse (grammar load included): {first:.3f} s")
    print(f"parse time: {best:.3f} s")


if __name__ == "__main__":
    main()
