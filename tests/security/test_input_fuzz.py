"""Issue 10, item 11: fuzzing flags, mount options and substitutions finds no traceback.

tests/parse/test_parse_fuzz.py throws arbitrary text at the parser; here the inputs are built
from the pieces that used to reach `int()`, `range()`, Python's recursion limit or an unchecked
mount option: every outcome must be a parsed, planned Buildfile or a BuildError with a position,
and every mount that plans must hold values the mount setup can use.
"""
from __future__ import annotations

import csv
import io
import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from builder.errors import BuildError
from builder.parse import parse_buildfile
from builder.parse.expand import expand_word, expand_words
from builder.plan.planner import make_plan
from builder.solve.mounts import plan_mounts

SETTINGS = settings(
    max_examples=int(os.environ.get("INPUT_FUZZ_EXAMPLES", "300")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

VALUES = st.one_of(
    st.text(max_size=6),
    st.sampled_from([
        "", "0", "1" * 30, "1" * 5000, "-1", "\u0661", "\u00b2", "0o7", "zz", "1.5", "true", "True", "T",
        "${A}", "0755", "7777", "17777", "4294967295", "64m", "1.5GiB", "LOCKED", "/x", "x\x00y", "1-99999999",
        "1s", "1" * 60 + "s", "${A:-${A:-${A}}}", "[z-a]", "$", "\\", "'", '"', ",", "=",
    ]),
)
FLAG_NAMES = {
    "RUN": ["mount", "network", "security"],
    "COPY": ["from", "chown", "chmod", "link", "parents", "exclude"],
    "ADD": ["chown", "chmod", "link", "checksum", "keep-git-dir", "exclude"],
    "HEALTHCHECK": ["interval", "timeout", "start-period", "start-interval", "retries"],
    "FROM": ["platform"],
}
MOUNT_KEYS = st.sampled_from([
    "target", "source", "from", "mode", "uid", "gid", "id", "sharing", "readonly", "ro", "rw", "readwrite",
    "required", "size", "env", "colour", "dst", "destination", "src", "type",
])
MOUNT_TYPES = st.sampled_from(["bind", "cache", "tmpfs", "secret", "ssh", "Cache", "x", ""])


def _csv(fields: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(fields)
    return buffer.getvalue().strip().replace("\r", " ").replace("\n", " ")


@st.composite
def mount_flag(draw) -> str:
    fields = [f"type={draw(MOUNT_TYPES)}"]
    for _ in range(draw(st.integers(0, 4))):
        key, value = draw(MOUNT_KEYS), draw(VALUES)
        fields.append(f"{key}={value}" if draw(st.booleans()) else key)
    return "--mount=" + _csv(fields)


@st.composite
def instruction(draw) -> str:
    keyword = draw(st.sampled_from([*FLAG_NAMES, "EXPOSE", "USER", "ARG", "ENV", "LABEL", "WORKDIR", "ONBUILD RUN"]))
    flags = []
    for _ in range(draw(st.integers(0, 3))):
        if keyword == "RUN" and draw(st.booleans()):
            flags.append(draw(mount_flag()))
        else:
            flags.append(f"--{draw(st.sampled_from(FLAG_NAMES.get(keyword, ['x'])))}={draw(VALUES)}")
    rest = draw(st.sampled_from(["a b", "CMD x", "NONE", '["a"]', "${V#[z-a]}", "$A", "x /", "1-99999999", "a=b", "scratch"]))
    return f"{keyword} {' '.join(flags)} {rest}".replace("\n", " ").replace("\r", " ")


@SETTINGS
@given(st.lists(instruction(), max_size=4), st.sampled_from(["FROM scratch\n", "ARG A=1\nFROM ${A}\n", ""]))
@example(["HEALTHCHECK --retries=" + "1" * 5000 + " CMD x"], "FROM scratch\n")  # int() past 4300 digits
@example(["COPY --from=\u00b2 a /"], "FROM scratch\n")  # int("²")
@example(["ARG X=${V#[z-a]}"], "")  # re.error
def test_flags_parse_and_plan_or_fail_cleanly(lines, head):
    try:
        buildfile = parse_buildfile(head + "\n".join(lines) + "\n", "fuzz.Buildfile")
        make_plan(buildfile, build_args={"V": "abc"}, target=None, target_platform=None)
    except BuildError as error:
        error.render()


class _Origin:
    identity = "stage:fuzz"


@SETTINGS
@given(st.lists(mount_flag(), min_size=1, max_size=3))
@example(["--mount=type=cache,target=/c,mode=zz"])
@example(["--mount=type=bind,\"target=' \""])  # an unclosed quote in an option, found by hypothesis
def test_mount_options_plan_or_fail_cleanly(mounts):
    try:
        run = parse_buildfile(f"FROM scratch\nRUN {' '.join(mounts)} true\n", "fuzz.Buildfile").instructions[1]
    except BuildError as error:
        assert error.pos is not None
        return
    try:
        prepared = plan_mounts(
            run, expand=lambda raw: expand_word(raw, {"A": "1"}), workdir="/",
            source_for=lambda *_args: _Origin(), stat_cache=None, secrets={},
        )
    except BuildError as error:
        assert error.pos is not None and error.hint
        return
    for mount in prepared:  # what MountSetup does with them must not raise
        assert 0 <= int(mount.options.get("mode", "0400"), 8) <= 0o7777
        assert 0 <= int(mount.options.get("uid", "0")) < 2**32 - 1
        assert 0 <= int(mount.options.get("gid", "0")) < 2**32 - 1
        assert mount.options.get("sharing", "shared") in ("shared", "private", "locked")
        for key in ("readonly", "ro", "rw", "readwrite", "required"):
            assert mount.options.get(key, "true") in ("true", "false")
        assert "\x00" not in mount.target


WORD_PIECES = [
    "$", "{", "}", ":", "-", "+", "?", "#", "%", "/", "A", "B", "*", "[", "]", "!", "^", "\\", "'", '"', " ",
    "z-a", "a-z", "${A", "${A:-", "${A#", "${A/", "${A//", "${A:-" * 40, "}" * 40,
]


@SETTINGS
@given(st.lists(st.sampled_from(WORD_PIECES), max_size=12).map("".join))
@example("${A#[z-a]}")  # re.error
@example("${A:-" * 600 + "}" * 600)  # RecursionError
def test_substitutions_expand_or_fail_cleanly(word):
    for escape in ("\\", "`"):
        try:
            expand_word(word, {"A": "abcab", "B": ""}, escape=escape)
            expand_words(word, {"A": "a b", "B": ""}, escape=escape)
        except BuildError as error:
            error.render()
