"""A fake RUN executor and a small build driver, so the scheduler and the cache can be tested
without root, namespaces or overlayfs.

A RUN's shell script is read as lines of a tiny language instead of being run:
    write PATH TEXT      a file at PATH (in the image) holding TEXT and a newline
    env NAME PATH        a file at PATH holding the value of $NAME in the step's environment
    counter PATH         a file at PATH holding how many times the executor has run (a new layer each time)
    say TEXT             TEXT on the step's output
    emit TEXT            TEXT on the step's output as one write, no newline added; \n in it is a newline
    fail N               exit status N
    meet                 wait at the executor's barrier (proves two steps run at once)
    block                wait until the executor is told to stop_all, then exit 137 (killed)
    wait NAME            wait until `post(NAME)` is called (by the test or another step): the test
                         decides which of two parallel steps ends first
    post NAME            post(NAME)
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from builder.image.store import Store
from builder.parse import parse_buildfile
from builder.plan.planner import make_plan
from builder.solve.assemble import assemble_image
from builder.solve.executor import RunOutcome, RunSpec
from builder.solve.options import BuildOptions, StepResult
from builder.solve.solver import Solver


@dataclass
class FakeExecutor:
    barrier: threading.Barrier | None = None
    runs: list[RunSpec] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: threading.Event = field(default_factory=threading.Event)
    blocked: threading.Event = field(default_factory=threading.Event)  # set when a step waits in `block`
    signals: dict[str, threading.Event] = field(default_factory=dict)

    def signal(self, name: str) -> threading.Event:
        with self.lock:
            return self.signals.setdefault(name, threading.Event())

    def post(self, name: str) -> None:
        self.signal(name).set()

    def stop_all(self) -> None:
        self.stopped.set()

    def run(self, spec: RunSpec, work: Path, on_output: Callable[[bytes], None]) -> RunOutcome:
        with self.lock:
            self.runs.append(spec)
            count = len(self.runs)
        diff = work / "diff"
        diff.mkdir()
        for line in spec.argv[-1].splitlines():
            words = line.split()
            if not words:
                continue
            verb, args = words[0], words[1:]
            if verb == "write":
                _write(diff, args[0], " ".join(args[1:]))
            elif verb == "env":
                _write(diff, args[1], spec.env.get(args[0], ""))
            elif verb == "counter":
                _write(diff, args[0], str(count))
            elif verb == "say":
                on_output((" ".join(args) + "\n").encode())
            elif verb == "emit":
                on_output(" ".join(args).replace("\\n", "\n").encode())
            elif verb == "fail":
                return RunOutcome(int(args[0]), None)
            elif verb == "block":
                self.blocked.set()
                if not self.stopped.wait(timeout=30):
                    raise AssertionError("block: nobody stopped the executor")
                return RunOutcome(137, None)
            elif verb == "wait":
                if not self.signal(args[0]).wait(timeout=30):
                    raise AssertionError(f"wait: nobody posted {args[0]!r}")
            elif verb == "post":
                self.post(args[0])
            elif verb == "meet":
                assert self.barrier is not None
                self.barrier.wait()
            else:
                raise AssertionError(f"the fake executor does not know {verb!r}")
        return RunOutcome(0, diff)


def _write(diff: Path, image_path: str, text: str) -> None:
    target = diff / image_path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n")


@dataclass
class Built:
    manifest_digest: str
    config: dict
    steps: list[StepResult]

    def cached(self) -> list[bool]:
        return [step.cached for step in self.steps if not step.instruction.startswith("FROM")]


def build(store: Store, text: str, executor: FakeExecutor, tmp: Path, **options) -> Built:
    """What builder.build does, with the fake executor; SOURCE_DATE_EPOCH is fixed unless given."""
    buildfile = parse_buildfile(text)
    plan = make_plan(buildfile, build_args=options.get("build_args"))
    context = tmp / "context"
    context.mkdir(exist_ok=True)
    build_options = BuildOptions(
        context_dir=context, buildfile_path=None, buildfile_text=text, buildfile_name="Buildfile",
        **{"source_date_epoch": 1_700_000_000, **options},
    )
    state, steps = Solver(store, plan, build_options, escape=buildfile.escape, executor=executor).solve()
    created = "2023-11-14T22:13:20Z"
    _, config, manifest_digest, _ = assemble_image(store, state, build_options, created)
    return Built(manifest_digest, config, steps)
