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


def test_two_escape_characters_at_the_end_of_a_line_end_the_instruction():
    # BuildKit continues a line only when its last escape character is not itself escaped.
    first, second = parse_buildfile("ENV C x\\\\\nENV D y\n").instructions
    assert first.pairs == (("C", "x\\\\"),) and second.pairs == (("D", "y"),)
    three = parse_buildfile("RUN a \\\\\\\nRUN b\n").instructions
    assert [run.command for run in three] == [ast.ShellCommand("a \\\\\\"), ast.ShellCommand("b")]
    backtick = parse_buildfile("# escape=`\nRUN a ``\nRUN b `\n  c\n").instructions
    assert [run.command for run in backtick] == [ast.ShellCommand("a ``"), ast.ShellCommand("b   c")]
    # A lone escape on a line still continues (BuildKit's second branch).
    assert only("RUN a \\\n\\\nb\n").command == ast.ShellCommand("a b")


def test_a_bare_double_dash_ends_the_flags():
    copy = only("COPY --chown=1:2 -- --not-a-flag dest/")
    assert copy.chown == "1:2" and copy.sources == ("--not-a-flag",) and copy.dest == "dest/"
    assert only("RUN -- echo hi").command == ast.ShellCommand("echo hi")
    assert only('CMD -- ["a"]').command == ast.ExecCommand(("a",))
    # `--""` is `--` once its quotes are gone, as in BuildKit's flag splitter.
    assert only('ENTRYPOINT --"" --x').command == ast.ShellCommand("--x")
    from_ = only("FROM -- img AS x")
    assert (from_.image, from_.alias) == ("img", "x")
    onbuild = only("ONBUILD -- RUN echo t")
    assert onbuild.trigger.command == ast.ShellCommand("echo t") and onbuild.trigger.pos == Pos("Buildfile", 1, 12)


def test_any_word_starting_with_two_dashes_is_a_flag():
    with pytest.raises(ParseError, match="unknown flag --1 for CMD") as caught:
        parse_buildfile("CMD --1 x\n")
    assert caught.value.pos == Pos("Buildfile", 1, 5)
    with pytest.raises(ParseError, match="unknown flag --x for ONBUILD"):
        parse_buildfile("ONBUILD --x RUN y\n")
    # The name is read after quote removal, as BuildKit does.
    assert only('COPY --"from"=stage a b').from_ == "stage"


def test_healthcheck_none_ignores_its_flags():
    for text in ("HEALTHCHECK --interval=5s NONE", "HEALTHCHECK --bogus --retries=x none"):
        healthcheck = only(text)
        assert healthcheck.command is None and healthcheck.flags == () and healthcheck.interval is None


def test_a_file_without_instructions_is_an_error():
    with pytest.raises(ParseError, match="the Buildfile is empty"):
        parse_buildfile("")
    with pytest.raises(ParseError, match="file with no instructions") as caught:
        parse_buildfile("# syntax=x\n\n  # only comments\n", "B")
    assert caught.value.pos == Pos("B", 1, 1) and caught.value.source_line == "# syntax=x"


def test_json_with_trailing_text_is_shell_form():
    # Current BuildKit (json.Unmarshal) reads the whole rest of the line; 20.10's decoder took the
    # first JSON value and dropped the rest, a bug BuildKit fixed in 2024 (moby/buildkit#5107).
    assert only('ENTRYPOINT ["x"] # comment').command == ast.ShellCommand('["x"] # comment')
    assert only('VOLUME ["/v"] # c').paths == ('["/v"]', "#", "c")
    assert only('COPY ["a", "b"] c').sources == ('["a",', '"b"]')
    with pytest.raises(ParseError, match="SHELL requires the arguments to be in JSON form"):
        parse_buildfile('SHELL ["/bin/sh", "-c"] ]\n')
    # NaN and Infinity are not JSON to Go: shell form, not "arrays must be comprised of strings".
    assert only('CMD ["a", NaN]').command == ast.ShellCommand('["a", NaN]')


def test_json_lone_surrogates_become_replacement_characters():
    # Go's decoder turns a `\ud800` that is not half of a pair into U+FFFD; a lone surrogate
    # could not be written into a UTF-8 config.
    assert only('CMD ["\\ud800x", "\\ud83d\\ude00"]').command == ast.ExecCommand(("\ufffdx", "\U0001f600"))
    assert only('SHELL ["\\udc00"]').argv == ("\ufffd",)


@pytest.mark.parametrize(("text", "hint_start"), [
    ("FROM scratch\nRUNN echo\n", "did you mean RUN? "),
    ("FROM scratch\nCOPPY a /a\n", "did you mean COPY? "),
    ("FROM scratch\nCOPY --chonw=1 a /a\n", "did you mean --chown? "),
    ("FROM scratch\nHEALTHCHECK --intervall=5s CMD true\n", "did you mean --interval? "),
])
def test_typos_get_a_suggestion(text, hint_start):
    with pytest.raises(ParseError) as caught:
        parse_buildfile(text)
    assert caught.value.hint.startswith(hint_start)


def test_no_suggestion_for_a_word_like_no_instruction():
    with pytest.raises(ParseError) as caught:
        parse_buildfile("FROM scratch\nXYZZY a\n")
    assert "did you mean" not in caught.value.hint


@pytest.mark.parametrize(("word", "message"), [
    ("abc", "invalid port 'abc'"),
    ("80/tcpp", "invalid protocol 'tcpp'"),
    ("70000", "invalid port '70000'"),
    ("90-80", "the end is below the start"),
    ("80-", "invalid port ''"),
    ("٣", "invalid port '٣'"),
])
def test_expose_refuses_what_docker_refuses_where_it_is_written(word, message):
    with pytest.raises(ParseError) as caught:
        parse_buildfile(f"FROM scratch\nEXPOSE 80 {word}\n")
    assert message in caught.value.message
    assert (caught.value.pos.line, caught.value.pos.column) == (2, 11)


def test_expose_with_variables_is_checked_once_expanded():
    buildfile = parse_buildfile("FROM scratch\nEXPOSE $PORT 443/TCP 53/udp 8000-8002\n")
    assert buildfile.instructions[1].ports == ("$PORT", "443/TCP", "53/udp", "8000-8002")
