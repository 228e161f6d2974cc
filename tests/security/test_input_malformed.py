"""Issue 10, item 11: malformed input gives a clear error with a position, never a traceback.

Each reproducer runs the real CLI in a child process (with a timeout, for the inputs that used
to take quadratic time): exit status 1, `file:line:col: message`, a hint, no "Traceback".
"""
from __future__ import annotations

from pathlib import Path

import pytest

from ._input_helpers import assert_clean_failure, child_env, run_cli


def _buildfile(tmp_path: Path, text: str | bytes) -> Path:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "file.txt").write_text("data\n")
    if isinstance(text, str):
        text = text.encode()
    (context / "Buildfile").write_bytes(text)
    return context


def _plan(tmp_path: Path, text: str | bytes, *extra: str, timeout: float = 60):
    return run_cli(["build", "--print-plan", "text", *extra, "."], cwd=_buildfile(tmp_path, text), timeout=timeout)


def _build(tmp_path: Path, text: str | bytes, *extra: str, timeout: float = 120):
    context = _buildfile(tmp_path, text)
    return run_cli(["--root", str(tmp_path / "store"), "build", *extra, "."], cwd=context, timeout=timeout)


# ---- variable expansion -----------------------------------------------------------------


def test_deeply_nested_substitutions(tmp_path):
    nested = "${a:-" * 600 + "x" + "}" * 600
    done = _plan(tmp_path, f"ARG X={nested}\nFROM scratch\n")
    assert_clean_failure(done, "Buildfile:1:1:", "nested more than 64 deep", "hint:")


def test_reversed_range_in_a_substitution_pattern(tmp_path):
    done = _plan(tmp_path, "ARG V=abc\nARG W=${V#[z-a]}\nFROM scratch\n")
    assert_clean_failure(done, "Buildfile:2:1:", "bad character range", "hint:")


def test_expansion_that_doubles_per_reference_is_bounded(tmp_path):
    lines = ["ARG A0=" + "x" * 1000]
    for step in range(1, 12):
        lines.append(f"ARG A{step}=" + f"${{A{step - 1}}}" * 8)  # x8 per line: 8**11 KB if unbounded
    done = _plan(tmp_path, "\n".join(lines) + "\nFROM scratch\n", timeout=60)
    assert_clean_failure(done, "more than 1048576 characters", "hint:")


# ---- RUN --mount options ------------------------------------------------------------------


@pytest.mark.parametrize(
    "mount, message",
    [
        ("type=cache,target=/c,mode=zz", "invalid value for mode: 'zz'"),
        ("type=cache,target=/c,uid=abc", "invalid value for uid: 'abc'"),
        ("type=cache,target=/c,gid=-1", "invalid value for gid: '-1'"),
        ("type=cache,target=/c,sharing=sometimes", "unsupported sharing value 'sometimes'"),
        ("type=cache,target=/c,readonly=maybe", "invalid value for readonly: 'maybe'"),
        ("type=tmpfs,target=/t,size=lots", "invalid value for size: 'lots'"),
        ("type=bind,target=/b,mode=0755", "mode= is not supported on a bind mount"),
        ("type=cache,target=/c,colour=blue", "unknown option 'colour'"),
        ("type=cache,target=/c,mode=" + "7" * 5000, "invalid value for mode"),
    ],
)
def test_mount_option_values(tmp_path, mount, message):
    done = _build(tmp_path, f"FROM scratch\nRUN --mount={mount} true\n")
    assert_clean_failure(done, "Buildfile:2:1:", message, "hint:")


def test_secret_mount_with_a_bad_uid(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cr3t\n")
    done = _build(
        tmp_path, "FROM scratch\nRUN --mount=type=secret,id=tok,uid=abc true\n", "--secret", f"id=tok,src={secret}"
    )
    assert_clean_failure(done, "Buildfile:2:1:", "invalid value for uid: 'abc'")


def test_mount_key_without_a_value(tmp_path):
    done = _plan(tmp_path, "FROM scratch\nRUN --mount=type=cache,target true\n")
    assert_clean_failure(done, "Buildfile:2:5:", "must be a key=value pair")


# ---- size: one huge line, and the parser's other big-input paths ---------------------------


def test_ten_megabyte_line(tmp_path):
    done = _plan(tmp_path, "FROM scratch\nLABEL a=" + "b" * (10 << 20) + "\n", timeout=60)
    stderr = assert_clean_failure(done, "Buildfile:2:65536:", "longer than 65535 bytes", "hint:")
    assert len(stderr) < 2000  # the line is not echoed


def test_ten_megabyte_buildfile_on_stdin(tmp_path):
    context = _buildfile(tmp_path, "")
    done = run_cli(["build", "--print-plan", "text", "-f", "-", "."], cwd=context, stdin=b"a" * (10 << 20), timeout=60)
    stderr = assert_clean_failure(done, "Buildfile:1:65536:", "longer than 65535 bytes")
    assert len(stderr) < 2000


def test_many_lines_past_the_size_limit(tmp_path):
    done = _plan(tmp_path, "FROM scratch\n" + "RUN true\n" * 200_000, timeout=60)
    assert_clean_failure(done, "the Buildfile is larger than 1048576 bytes", "hint:")


def test_thousands_of_flags_on_one_instruction(tmp_path):
    flags = " \\\n".join(" ".join(["--mount=type=tmpfs,target=/t"] * 1000) for _ in range(5))
    done = _plan(tmp_path, f"FROM scratch\nRUN {flags} true\nRUN --bogus x\n")
    assert_clean_failure(done, "Buildfile:7:5:", "unknown flag --bogus")  # line 2 parsed first


def test_long_healthcheck_interval_fails_fast(tmp_path):
    done = _plan(tmp_path, "FROM scratch\nHEALTHCHECK --interval=" + "1" * 60000 + " CMD true\n", timeout=20)
    assert_clean_failure(done, "Buildfile:2:13:", "invalid duration")


def test_healthcheck_retries_with_thousands_of_digits(tmp_path):
    done = _plan(tmp_path, "FROM scratch\nHEALTHCHECK --retries=" + "1" * 5000 + " CMD true\n")
    assert_clean_failure(done, "Buildfile:2:13:", "--retries", "out of range")


# ---- values that reached int() or range() unchecked ----------------------------------------


def test_copy_from_a_unicode_digit(tmp_path):
    done = _build(tmp_path, "FROM scratch\nCOPY --from=\u00b2 /a /b\n")
    assert_clean_failure(done, "invalid image reference")


@pytest.mark.parametrize("ports", ["1-70000", "1-" + "9" * 5000])
def test_expose_range_past_the_port_space(tmp_path, ports):
    done = _build(tmp_path, f"FROM scratch\nEXPOSE {ports}\n")
    assert_clean_failure(done, "Buildfile:2:8:", "invalid port", "hint:")


# ---- command line values -------------------------------------------------------------------


def test_source_date_epoch_out_of_range(tmp_path):
    done = _build(tmp_path, "FROM scratch\nCOPY file.txt /\n", "--source-date-epoch", "99999999999999999999")
    assert_clean_failure(done, "--source-date-epoch", "out of range")


def test_source_date_epoch_env_with_thousands_of_digits(tmp_path):
    import subprocess
    import sys

    context = _buildfile(tmp_path, "FROM scratch\nCOPY file.txt /\n")
    env = child_env()
    env["SOURCE_DATE_EPOCH"] = "1" * 5000
    done = subprocess.run(
        [sys.executable, "-m", "builder.cli", "--root", str(tmp_path / "store"), "build", "."],
        cwd=context, capture_output=True, env=env, timeout=60,
    )
    assert_clean_failure(done, "SOURCE_DATE_EPOCH", "not a valid number of seconds")


def test_compression_level_out_of_range(tmp_path):
    done = _build(tmp_path, "FROM scratch\nCOPY file.txt /\n", "--compression-level", "99")
    assert_clean_failure(done, "--compression-level 99 is out of range for gzip", "hint:")


@pytest.mark.parametrize("option", ["--iidfile", "--metadata-file"])
def test_output_file_that_cannot_be_written(tmp_path, option):
    done = _build(tmp_path, "FROM scratch\nCOPY file.txt /\n", option, str(tmp_path))
    assert_clean_failure(done, f"cannot write {option}")


def test_unicode_and_huge_ids_in_chown_and_passwd_are_errors_not_tracebacks(tmp_path, busybox_store) -> None:
    """`--chown=²` and an image's /etc/passwd with odd ids: a BuildError or a skipped line."""
    import builder
    from builder.errors import BuildError

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "f").write_text("x\n")
    with pytest.raises(BuildError):
        builder.build(context, buildfile_text="FROM busybox\nCOPY --chown=\u00b2 f /f\n", root=busybox_store.root)
    with pytest.raises(BuildError):
        builder.build(context, buildfile_text=f"FROM busybox\nCOPY --chown={'9' * 5000} f /f\n", root=busybox_store.root)
    (context / "passwd").write_text(f"odd:x:\u00b2:0::/:/bin/sh\nbig:x:{'9' * 5000}:0::/:/bin/sh\nok:x:1234:0::/:/bin/sh\n")
    text = "FROM busybox\nCOPY passwd /etc/passwd\nCOPY --chown=ok f /owned\n"
    result = builder.build(context, buildfile_text=text, root=busybox_store.root)
    assert result.steps[-1].layer_diff_id is not None
    with pytest.raises(BuildError):
        builder.build(context, buildfile_text=text.replace("--chown=ok", "--chown=odd"), root=busybox_store.root)
