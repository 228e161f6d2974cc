"""Commands and flags typed from habit with docker: they work through the real CLI entry points."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from image_cmd_helpers import add_image

from builder import __version__
from builder.cli import build_main, main
from builder.commands.gotemplate import parse_template
from builder.errors import BuildError
from builder.image.store import Store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def image(root) -> str:
    return add_image(Store.open(root), "habit", tags=["habit:1"])


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's --version and usage errors
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_image_management_commands_work_under_image(capsys, root, image):
    image_id = Store.open(root).load_image(image).config_digest
    code, out, _ = run(capsys, "--root", str(root), "image", "ls", "-q")
    assert (code, out.split()) == (0, [image_id[7:19]])
    code, out, _ = run(capsys, "--root", str(root), "image", "inspect", "habit:1")
    assert json.loads(out)[0]["Id"] == image_id
    code, out, _ = run(capsys, "--root", str(root), "image", "history", "-q", "habit:1")
    assert code == 0 and len(out.split()) == 3
    assert run(capsys, "--root", str(root), "image", "tag", "habit:1", "other:2")[0] == 0
    code, out, _ = run(capsys, "--root", str(root), "image", "rm", "other:2", "habit:1")
    assert out.splitlines() == ["Untagged: other:2", "Untagged: habit:1", f"Deleted: {image_id}"]
    assert Store.open(root).images() == []


def test_root_is_accepted_after_the_subcommand(capsys, root, image):
    code, out, _ = run(capsys, "images", "--root", str(root), "--format", "{{.Repository}}:{{.Tag}}")
    assert (code, out) == (0, "habit:1\n")
    code, out, _ = run(capsys, "image", "ls", "--root", str(root), "--format", "{{.Repository}}")
    assert (code, out) == (0, "habit\n")


def test_inspect_format_takes_the_go_template_scripts_use(capsys, root, image):
    image_id = Store.open(root).load_image(image).config_digest
    template = '{{.Id}}|{{json .Config.Env}}|{{index .Config.Labels "label"}}|{{.Config.Cmd}}|{{.Os}}/{{.Architecture}}'
    code, out, _ = run(capsys, "--root", str(root), "inspect", "--format", template, "habit:1")
    assert (code, out) == (0, f'{image_id}|["PATH=/usr/bin"]|habit|[/bin/sh]|linux/amd64\n')
    code, out, _ = run(capsys, "--root", str(root), "inspect", "-f", "{{len .RootFS.Layers}} {{.Missing}}", "habit:1")
    assert out == "2 <no value>\n"


def test_images_and_history_formats(capsys, root, image):
    code, out, _ = run(capsys, "--root", str(root), "images", "--format", "table {{.Repository}}\\t{{.ID}}")
    header, row = [line.split() for line in out.splitlines()]
    assert header == ["REPOSITORY", "IMAGE", "ID"] and row[0] == "habit"
    code, out, _ = run(capsys, "--root", str(root), "history", "--format", "{{.Size}}", "habit:1")
    assert code == 0 and out.splitlines()[1] == "0B"  # the ENV step: an empty layer


def test_a_template_we_cannot_read_is_a_clear_error(capsys, root, image):
    code, _, err = run(capsys, "--root", str(root), "inspect", "-f", "{{range .RepoTags}}{{.}}{{end}}", "habit:1")
    assert code == 1 and "not supported" in err and "Traceback" not in err
    code, _, err = run(capsys, "--root", str(root), "images", "--format", "{{.Repository")
    assert code == 1 and "never closed" in err


def test_load_reads_standard_input(capsys, root, image, tmp_path, monkeypatch):
    archive = tmp_path / "habit.tar"
    assert run(capsys, "--root", str(root), "save", "-o", str(archive), "habit:1")[0] == 0
    other = tmp_path / "other-store"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(archive.read_bytes())))
    code, out, _ = run(capsys, "--root", str(other), "load")
    assert (code, out) == (0, "Loaded image: habit:1\n")
    # A docker-archive keeps the image ID (the config), not the manifest.
    assert Store.open(other).load_image("habit:1").config_digest == Store.open(root).load_image(image).config_digest
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, _, err = run(capsys, "--root", str(other), "load")
    assert code == 1 and "stdin is empty" in err


def test_prune_takes_force(capsys, root, image):
    code, out, _ = run(capsys, "--root", str(root), "prune", "-f")
    assert code == 0 and "reclaimed" in out
    assert Store.open(root).load_image("habit:1").manifest_digest == image


def test_versions_of_both_entry_points(capsys):
    assert run(capsys, "--version")[1] == f"builder {__version__}\n"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        build_main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"build {__version__}\n"


def test_print_plan_followed_by_the_context(capsys, tmp_path):
    (tmp_path / "Buildfile").write_text("FROM scratch\nCOPY a /a\n")
    (tmp_path / "a").write_text("a")
    code, out, _ = run(capsys, "build", "--print-plan", str(tmp_path))
    assert code == 0 and "COPY a /a" in out and f"plan for {tmp_path}/Buildfile" in out
    code, _, err = run(capsys, "build", "--print-plan", "graph", str(tmp_path))
    assert code == 1 and "text or dot" in err


def test_load_flag_builds_into_the_store_and_says_so(capsys, tmp_path, root):
    (tmp_path / "Buildfile").write_text("FROM scratch\nCOPY a /a\n")
    (tmp_path / "a").write_text("a")
    code, out, err = run(capsys, "--root", str(root), "build", "--load", "-q", "-t", "loaded:1", str(tmp_path))
    assert code == 0 and "--load has nothing to do" in err
    assert Store.open(root).load_image("loaded:1").config_digest == out.strip()


def test_run_tty_needs_a_terminal(capsys, root, image):
    code, _, err = run(capsys, "--root", str(root), "run", "-it", "habit:1", "true")
    assert code == 1 and "not a TTY" in err


@pytest.mark.parametrize(("template", "data", "shown"), [
    ("{{.}}", {"a": 1}, "map[a:1]"),
    ("{{.A.B}}", {"A": {"B": [1, "x", None, True]}}, "[1 x <nil> true]"),
    ("{{json .A}}", {"A": {"z": 1, "a": "<&>"}}, '{"a":"<&>","z":1}'),
    ("{{json .Gone}}", {}, "null"),
    ("{{index .L 1}}", {"L": ["a", "b"]}, "b"),
    ('{{index .M "k" "j"}}', {"M": {"k": {"j": "deep"}}}, "deep"),
    ('{{index .M "nope"}}', {"M": {}}, "<no value>"),
    ("{{upper .A}}-{{lower .B}}\\t{{len .C}}", {"A": "x", "B": "Y", "C": "abc"}, "X-y\t3"),
])
def test_template_subset(template, data, shown):
    assert parse_template(template).render(data) == shown


@pytest.mark.parametrize("template", ["{{.A | json}}", "{{$x := .A}}", "{{if .A}}x{{end}}", "{{index .A}}", "{{json}}",
                                      "{{A}}", "{{.A", "{{}}"])
def test_template_outside_the_subset_is_refused(template):
    with pytest.raises(BuildError):
        parse_template(template).render({"A": {}})
