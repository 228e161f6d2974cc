"""`import --change`: Dockerfile metadata instructions applied to an image config, through the
same parser and the same metadata code as a build (so EXPOSE ranges, ENV quoting and
ENTRYPOINT's effect on CMD mean what they mean in a Buildfile)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from builder.errors import BuildError
from builder.parse import ast, parse_buildfile
from builder.parse.expand import expand_word
from builder.solve import metadata
from builder.solve.state import ImageState

# What `docker import --change` accepts, and SHELL and STOPSIGNAL as `docker commit` does.
CHANGE_INSTRUCTIONS = {
    ast.Cmd, ast.Entrypoint, ast.Env, ast.Expose, ast.Label, ast.Onbuild, ast.User, ast.Volume,
    ast.Workdir, ast.Stopsignal, ast.Shell, ast.Healthcheck,
}


def apply_changes(config: dict[str, Any], changes: Sequence[str]) -> None:
    """Apply each change (one instruction, e.g. `ENV A=1`) to `config["config"]`, in order."""
    state = ImageState(config=dict(config.get("config") or {}))
    for number, change in enumerate(changes, start=1):
        parsed = parse_buildfile(change, path=f"--change #{number}")
        if len(parsed.instructions) != 1 or type(parsed.instructions[0]) not in CHANGE_INSTRUCTIONS:
            allowed = ", ".join(sorted(kind.__name__.upper() for kind in CHANGE_INSTRUCTIONS))
            raise BuildError(f"unsupported change {change!r}", hint=f"give one instruction of: {allowed}")
        instruction = parsed.instructions[0]
        expand = _expander(state.expansion_env(), instruction, parsed.escape)

        _, config_change = metadata.describe(instruction, state, expand)
        # `docker import --change CMD` goes through the classic dispatcher, which sets this on Windows only.
        config_change.set.pop("ArgsEscaped", None)
        config_change.apply(state)
    config["config"] = state.runtime_config()


def _expander(env: dict[str, str], instruction: ast.Instruction, escape: str) -> Callable[[str], str]:
    def expand(raw: str) -> str:
        return expand_word(raw, env, pos=instruction.pos, escape=escape)

    return expand
