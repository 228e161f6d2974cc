"""Print a Plan: `--print-plan` (text) and `--print-plan=dot` (Graphviz)."""
from __future__ import annotations

from builder.parse import ast
from builder.plan.planner import Plan, Stage


def summary(instruction: ast.Instruction) -> str:
    """One line for an instruction, as progress and plans show it: continuation lines joined,
    comment lines inside them dropped; for a heredoc instruction only its first line."""
    lines = instruction.source.splitlines()
    if getattr(instruction, "heredocs", ()):
        return lines[0].strip()
    parts: list[str] = []
    last = len(lines) - 1
    for index, line in enumerate(lines):
        text = line.strip()
        if not text or (parts and text.startswith("#")):
            continue
        # Every line but the last ends in a continuation; the last line's final escape
        # character is text (`RUN echo \\\\` ends its instruction).
        if index < last and text.endswith(("\\", "`")):
            text = text[:-1].rstrip()
        parts.append(text)
    return " ".join(part for part in parts if part)


def _base_text(plan: Plan, stage: Stage) -> str:
    if stage.base_stage is not None:
        return f"stage {plan.stages[stage.base_stage].label}"
    return stage.base


def render_text(plan: Plan) -> str:
    lines = [
        f"plan for {plan.path}",
        f"target: {plan.stages[plan.target].label} (platform {plan.target_platform})",
        "build order: " + " -> ".join(plan.stages[index].label for index in plan.order),
    ]
    if plan.global_args:
        rendered = ", ".join(f"{name}={value!r}" if value is not None else f"{name} (unset)" for name, value in plan.global_args)
        lines.append(f"global args: {rendered}")
    if plan.unused_build_args:
        lines.append("unused build args: " + ", ".join(plan.unused_build_args))
    for stage in plan.stages:
        needed = stage.index in plan.order
        marker = "" if needed else "  (not needed for the target, skipped)"
        lines.append("")
        lines.append(f"stage {stage.index} {stage.label!r} FROM {_base_text(plan, stage)}{marker}")
        if stage.platform is not None:
            lines.append(f"  platform: {stage.platform}")
        if stage.depends_on:
            lines.append("  needs: " + ", ".join(plan.stages[index].label for index in stage.depends_on))
        if stage.copy_from_images:
            lines.append("  copies from images: " + ", ".join(stage.copy_from_images))
        for number, instruction in enumerate(stage.instructions, start=1):
            lines.append(f"  {number:>3}. [{instruction.pos.line}] {summary(instruction)}")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(plan: Plan) -> str:
    lines = ["digraph plan {", "  rankdir=LR;", "  node [shape=box, fontname=monospace];"]
    images: dict[str, str] = {}
    for stage in plan.stages:
        style = "" if stage.index in plan.order else ", style=dashed"
        if stage.index == plan.target:
            style += ", penwidth=2"
        steps = "\\l".join(summary(i).replace('"', '\\"')[:60] for i in stage.instructions)
        label = f"{stage.label}\\n{steps}\\l" if steps else stage.label
        lines.append(f'  s{stage.index} [label="{label}"{style}];')
        external = [] if stage.base_stage is not None else [stage.base]
        for image in [*external, *stage.copy_from_images]:
            if image not in images:
                images[image] = f"i{len(images)}"
                lines.append(f"  {images[image]} [label={_dot_quote(image)}, shape=ellipse];")
    for stage in plan.stages:
        if stage.base_stage is not None:
            lines.append(f'  s{stage.base_stage} -> s{stage.index} [label="FROM"];')
        else:
            lines.append(f'  {images[stage.base]} -> s{stage.index} [label="FROM"];')
        for source in dict.fromkeys(stage.copy_from_stages):
            lines.append(f'  s{source} -> s{stage.index} [label="COPY --from", style=dotted];')
        for image in stage.copy_from_images:
            lines.append(f'  {images[image]} -> s{stage.index} [label="COPY --from", style=dotted];')
    lines.append("}")
    return "\n".join(lines) + "\n"
