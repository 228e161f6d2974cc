"""Targeted checks of lexical rules and AST details (the snapshots cover the rest)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from builder.errors import BuildError, ParseError, Pos
from builder.parse import ast, parse_buildfile

from ._data import REPO


def only(text: str) -> ast.Instruction:
    instructions = parse_buildfile(text).instructions
    assert len(instructions) == 1, instructions
    return instructions[0]


def test_import_does_not_compile_the_grammar():
    probe = (
        "import builder, builder.parse, builder.parse.grammar as g, sys;"
        "assert not g._parsers, 'grammar compiled at import';"
        "builder.parse.parse_buildfile('FROM a\\n');"
        "assert list(g._parsers) == ['\\\\']"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO)


def test_keywords_are_case_insensitive_and_keep_positions():
    buildfile = parse_buildfile("fRoM alpine\n  rUn echo hi\n")
    first, second = buildfile.instructions
    assert isinstance(first, ast.From) and first.image == "alpine"
    assert isinstance(second, ast.Run) and second.pos == Pos("Buildfile", 2, 3)


def test_continuation_joins_and_skips_comments_and_blank_lines():
    run = only("RUN a \\\n# c\n\n   \n  b \\   \n c\n")
    assert run.command == ast.ShellCommand("a   b  c")
    assert run.source == "RUN a \\\n# c\n\n   \n  b \\   \n c"


def test_positions_inside_continuation_lines():
    copy = only("COPY \\\n   --chown=1:1 \\\n      --from=x a b\n")
    assert [flag.pos for flag in copy.flags] == [Pos("Buildfile", 2, 4), Pos("Buildfile", 3, 7)]


def test_escape_directive_backtick():
    buildfile = parse_buildfile("# escape=`\nRUN dir c:\\ `\n  && echo\\done\n")
    assert buildfile.escape == "`"
    assert buildfile.instructions[0].command == ast.ShellCommand("dir c:\\   && echo\\done")


def test_directive_only_at_top():
    buildfile = parse_buildfile("FROM a\n# escape=`\nRUN x `\n")
    assert buildfile.escape == "\\" and buildfile.directives == ()
    # the backtick is not an escape here, so it stays in the command
    assert buildfile.instructions[1].command == ast.ShellCommand("x `")


def test_directives_recorded_in_order_lowercased():
    buildfile = parse_buildfile("# Syntax=x/y:1\n#CHECK=skip=all\nFROM a\n")
    assert buildfile.directives == (("syntax", "x/y:1"), ("check", "skip=all"))


def test_heredoc_strip_tabs_and_expand_flags():
    run = only("RUN <<-'END' sh\n\t\tone\n\ttwo\n\t  three\n\tEND\n")
    assert run.heredocs == (ast.Heredoc("END", "one\ntwo\n  three\n", expand=False, strip_tabs=True),)


def test_heredoc_terminator_must_match_whole_line():
    run = only("RUN <<EOF\nEOF \n EOF\nEOFX\nEOF\n")
    assert run.heredocs[0].content == "EOF \n EOF\nEOFX\n"


def test_heredoc_not_collected_for_onbuild():
    buildfile = parse_buildfile("ONBUILD RUN <<EOF\nFROM x\n")
    assert isinstance(buildfile.instructions[1], ast.From)
    assert buildfile.instructions[0].trigger.heredocs == ()


def test_exec_form_falls_back_to_shell_form():
    assert only('CMD ["a", "b"]').command == ast.ExecCommand(("a", "b"))
    assert only("CMD ['a']").command == ast.ShellCommand("['a']")
    assert only('CMD ["a" "b"]').command == ast.ShellCommand('["a" "b"]')


def test_env_legacy_and_pairs_and_global_args():
    buildfile = parse_buildfile("ARG A=1\nARG B\nFROM x\nARG C\nENV K v w\nENV X=\"a b\" Y=z\n")
    assert [arg.args for arg in buildfile.global_args] == [(("A", "1"),), (("B", None),)]
    assert buildfile.instructions[4].pairs == (("K", "v w"),)
    assert buildfile.instructions[5].pairs == (("X", '"a b"'), ("Y", "z"))


def test_from_alias_lowercased_and_platform():
    from_ = only("FROM --platform=linux/arm64 img AS MyStage")
    assert (from_.image, from_.platform, from_.alias) == ("img", "linux/arm64", "mystage")


def test_onbuild_trigger_parsed():
    onbuild = only("ONBUILD COPY --from=a x y")
    assert isinstance(onbuild.trigger, ast.Copy) and onbuild.trigger.from_ == "a"
    assert onbuild.trigger.pos == Pos("Buildfile", 1, 9)


def test_error_renders_with_caret_and_hint():
    with pytest.raises(ParseError) as caught:
        parse_buildfile("FROM a\nCOPY --nope=1 a b\n", "x/Buildfile")
    rendered = caught.value.render().splitlines()
    assert rendered[0] == "x/Buildfile:2:6: unknown flag --nope for COPY"
    assert rendered[1] == " 2 | COPY --nope=1 a b"
    assert rendered[2] == "   |      ^"
    assert rendered[3].startswith("hint: COPY accepts --from")


@pytest.mark.parametrize(
    "text",
    [
        "ENV " + "\\" * 3000 + "\n",
        "ENV " + '"\\' * 3000 + "\n",
        "# escape=`\nENV a" + "`" * 3000 + "\n",
        "ARG " + "\\" * 3000 + "\n",
        "RUN --x=" + "\\" * 3000 + " a\n",
        "LABEL " + "a\\ " * 3000 + " b\n",
        "RUN " + '["a", ' * 3000 + "\n",
        "HEALTHCHECK --interval=" + "9" * 400 + "h CMD x\n",
        "COPY " + "[" * 3000 + "\n",
    ],
    ids=lambda text: repr(text[:14]),
)
def test_pathological_input_is_fast_and_clean(text):
    start = time.perf_counter()
    try:
        parse_buildfile(text)
    except BuildError:
        pass
    assert time.perf_counter() - start < 5  # exponential regex backtracking would take ages
