"""RUN: a command over the parent layers, in the sandbox; its diff becomes the step's layer."""
from __future__ import annotations

import codecs
from collections import deque
from pathlib import Path

from builder.errors import BuildError, PlanError, RunError
from builder.parse import ast
from builder.plan.platforms import PROXY_ARGS
from builder.progress import Event, EventKind
from builder.solve.executor import RunSpec
from builder.solve.metadata import command_argv, json_list
from builder.solve.mounts import MountSetup, plan_mounts
from builder.solve.state import LayerRef
from builder.solve.step import PreparedStep, StepInput
from builder.userns import run_failure_note

OUTPUT_TAIL_LINES = 15
OUTPUT_LINE_LIMIT = 8192
NETWORK_MODES = ("default", "host", "none")
# Part of every RUN key: bumped when the same RUN would give another layer because the builder
# runs it differently (2: HOME, /proc /dev /sys kept, BuildKit's /etc and hostname), so layers
# cached by an earlier builder are not reused as if this one had made them.
RUNTIME_VERSION = 2


class RunStep(PreparedStep):
    makes_layer = True

    def __init__(self, step: StepInput) -> None:
        instruction = step.instruction
        assert isinstance(instruction, ast.Run)
        session, state = step.session, step.state
        self.step = step
        self.argv = run_argv(instruction, state.shell())
        self.env = state.run_env()
        network = instruction.network or session.options.network
        if network == "default":
            network = session.options.network
        if network not in NETWORK_MODES:
            raise PlanError(
                f"RUN --network={network} is not supported",
                pos=instruction.pos,
                source_line=step.source_line,
                hint="use --network=default, --network=host or --network=none",
            )
        if instruction.security not in (None, "sandbox"):
            raise PlanError(
                f"RUN --security={instruction.security} is not supported",
                pos=instruction.pos,
                source_line=step.source_line,
                hint="RUN steps always run sandboxed with Docker's default capabilities",
            )
        self.network = network
        self.workdir = state.workdir()
        self.user = state.user() or None
        self.lower_layers = list(state.layers)
        visible_env = state.env()
        used_args = {name: value for name, value in state.args.items()
                     if name not in PROXY_ARGS and name not in visible_env}
        prefix = f"|{len(used_args)} " + " ".join(f"{k}={v}" for k, v in sorted(used_args.items())) + " " if used_args else ""
        shown = " ".join(self.argv) if isinstance(instruction.command, ast.ShellCommand) else json_list(self.argv)
        self.created_by = f"RUN {prefix}{shown} # buildkit"
        resolver = session.sources
        platform = step.stage.platform or session.plan.target_platform
        self.mounts = plan_mounts(
            instruction,
            expand=step.expand,
            workdir=self.workdir,
            source_for=lambda from_value, paths: resolver.source_for(
                from_value, paths, platform=platform, pos=instruction.pos, source_line=step.source_line,
                step=step.number),
            stat_cache=session.stat_cache(),
            secrets=session.options.secrets,
        )
        self.components = {
            "instruction": ["RUN", self.argv],
            # Proxy settings change how a RUN reaches the network, not what it builds (Docker's rule).
            "env": {name: value for name, value in self.env.items() if name not in PROXY_ARGS},
            "user": state.user(),
            "workdir": self.workdir,
            "network": network,
            "mounts": [mount.key for mount in self.mounts],
            "runtime": RUNTIME_VERSION,
        }

    def execute(self, work: Path) -> LayerRef | None:
        step = self.step
        session, instruction = step.session, step.instruction
        tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        partial = [""]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character split across reads stays whole

        def emit(lines: list[str]) -> None:
            session.emit(Event(EventKind.STEP_OUTPUT, step.stage.label, step.number,
                               text="".join(line + "\n" for line in lines)))

        def on_output(chunk: bytes) -> None:
            # Whole lines only, so a renderer can prefix each (a line split across reads is joined).
            text = decoder.decode(chunk)
            lines = (partial[0] + text).split("\n")
            partial[0] = lines.pop()
            if len(partial[0]) > OUTPUT_LINE_LIMIT:  # no newline for long: shown as it is, not held
                lines.append(partial[0])
                partial[0] = ""
            tail.extend(lines)
            if lines:
                emit(lines)

        mount_setup = MountSetup(session.store.root, work)
        try:
            spec = RunSpec(
                argv=self.argv,
                env=self.env,
                workdir=self.workdir,
                user=self.user,
                network=self.network,
                lower_dirs=session.lower_dirs(self.lower_layers),
                binds=mount_setup.binds(self.mounts, session.options.secrets),
            )
            outcome = session.executor.run(spec, work, on_output)
        except BuildError as error:
            if error.pos is None:  # the sandbox knows no Buildfile: say which RUN it was
                error.pos, error.source_line = instruction.pos, step.source_line
            raise
        finally:
            mount_setup.close()
        partial[0] += decoder.decode(b"", final=True)
        if partial[0]:
            tail.append(partial[0])
            emit([partial[0]])
        if outcome.status != 0:
            shown = "\n".join(tail)
            hint = ("last output lines:\n" + shown) if shown else "the command printed nothing"
            note = run_failure_note()
            raise RunError(
                f"RUN failed with exit code {outcome.status}",
                exit_status=outcome.status,
                pos=instruction.pos,
                source_line=step.source_line,
                hint=hint + ("\n" + note if note else ""),
            )
        return session.commit_layer(outcome.diff_dir)


def run_argv(instruction: ast.Run, shell: list[str]) -> list[str]:
    """The argv of a RUN, heredocs included the way BuildKit runs them."""
    command = instruction.command
    if isinstance(command, ast.ExecCommand) or not instruction.heredocs:
        return command_argv(command, shell)
    text = command.text.strip()
    only = instruction.heredocs[0]
    if len(instruction.heredocs) == 1 and text.lstrip("<-").strip("'\"") == only.delimiter:
        # `RUN <<EOF` alone: the heredoc is the script.
        return [*shell, only.content]
    script = command.text.rstrip("\n") + "\n" + "".join(
        doc.content + ("" if doc.content.endswith("\n") or not doc.content else "\n") + doc.delimiter + "\n"
        for doc in instruction.heredocs
    )
    return [*shell, script]
