"""The command line: printing plans and ASTs, reading the Buildfile from stdin, rendering errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import oci_layout_manifest, write_context

import builder
from builder.cli import build_main
from builder.cli import main as cli_main
from builder.layer import MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_ZSTD

REPO = Path(__file__).resolve().parents[2]
MULTI = (
    "ARG BASE=scratch\n"
    "FROM ${BASE} AS deps\nCOPY a.txt /a.txt\n"
    "FROM scratch AS tools\nCOPY b.txt /b.txt\n"
    "FROM deps AS final\nCOPY --from=tools /b.txt /b.txt\n"
)


def test_print_plan_text_and_dot_build_nothing(tmp_path: Path, capsys) -> None:
    context = write_context(tmp_path / "ctx", {"Buildfile": MULTI, "a.txt": "a", "b.txt": "b"})
    store = tmp_path / "store"
    assert cli_main(["--root", str(store), "build", "--print-plan", "--target", "final", str(context)]) == 0
    text = capsys.readouterr().out
    assert "build order: deps -> tools -> final" in text
    assert "stage 2 'final' FROM stage deps" in text
    assert build_main(["--print-plan=dot", str(context)]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith("digraph plan {") and 's1 -> s2 [label="COPY --from", style=dotted];' in dot
    assert not store.exists(), "printing a plan must not create a store"


def test_print_ast_is_json(tmp_path: Path, capsys) -> None:
    context = write_context(tmp_path / "ctx", {"Buildfile": "FROM scratch\nENV A=1\n"})
    assert cli_main(["build", "--print-ast", str(context)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "instructions" in json.dumps(data)


def test_buildfile_from_stdin(tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {"a.txt": "from stdin build\n"})
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "builder.cli", "--root", str(tmp_path / "s"), "build", "-f", "-", "--progress", "plain",
         "-o", f"type=local,dest={out}", str(context)],
        input="FROM scratch\nCOPY a.txt /\n", capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert completed.returncode == 0, completed.stderr
    assert (out / "a.txt").read_text() == "from stdin build\n"


def test_syntax_error_is_rendered_with_line_caret_and_hint(tmp_path: Path, capsys, monkeypatch) -> None:
    context = write_context(tmp_path / "ctx", {"Buildfile": "FROM scratch\nCOPY a /\nFROBNICATE the widget\n"})
    monkeypatch.chdir(context)
    code = cli_main(["--root", str(tmp_path / "s"), "build", "."])
    err = capsys.readouterr().err
    assert code == 1
    lines = err.splitlines()
    assert lines[0].startswith("Buildfile:3:1: ")
    assert lines[1] == " 3 | FROBNICATE the widget"
    assert lines[2] == "   | ^"
    assert lines[3].startswith("hint: ")
    assert "Traceback" not in err


def test_labels_build_args_and_tags_from_the_cli(tmp_path: Path, capsys, monkeypatch) -> None:
    context = write_context(tmp_path / "ctx", {"Buildfile": "FROM scratch\nARG FROM_ENV\nARG GIVEN\nLABEL env=$FROM_ENV given=$GIVEN\n"})
    monkeypatch.setenv("FROM_ENV", "taken from the environment")
    store = tmp_path / "s"
    code = cli_main(["--root", str(store), "build", "-q", "--build-arg", "FROM_ENV", "--build-arg", "GIVEN=yes",
                     "--label", "extra=1", "-t", "one", "-t", "two:v2", str(context)])
    image_id = capsys.readouterr().out.strip()
    assert code == 0 and image_id.startswith("sha256:")
    from builder.image.store import Store

    record = Store.open(store).load_image("two:v2")
    assert record.config_digest == image_id
    assert record.config["config"]["Labels"] == {"env": "taken from the environment", "given": "yes", "extra": "1"}


@pytest.mark.parametrize(
    ("compression", "media_type"),
    [("gzip", MEDIA_TYPE_TAR_GZIP), ("zstd", MEDIA_TYPE_TAR_ZSTD), ("uncompressed", MEDIA_TYPE_TAR)],
)
def test_compression_choices_keep_the_diff_id(tmp_path: Path, compression: str, media_type: str) -> None:
    """--compression and --compression-level reach the layers that leave the store; the image ID
    (config, diff_ids) does not depend on them, and the store keeps the build uncompressed."""
    context = write_context(tmp_path / "ctx", {"Buildfile": "FROM scratch\nCOPY data.txt /\n", "data.txt": "compress me " * 5000})
    results, layers = [], []
    for level in (1, 9):
        layout = tmp_path / f"layout{level}"
        results.append(builder.build(context, root=tmp_path / f"s{level}", compression=compression, compression_level=level,
                                     source_date_epoch=1, outputs=[f"type=oci,dest={layout},tar=false"]))
        layers.append(oci_layout_manifest(layout)["layers"][0])
    assert {layer["mediaType"] for layer in layers} == {media_type}
    assert results[0].config["rootfs"] == results[1].config["rootfs"]
    assert results[0].image_id == results[1].image_id
    assert results[0].manifest["layers"][0]["mediaType"] == MEDIA_TYPE_TAR, "built layers stay uncompressed in the store"
    if compression != "uncompressed":
        assert layers[0]["digest"] != layers[1]["digest"], "the level must reach the compressor"
        assert layers[0]["size"] < 60000 and layers[1]["size"] < 60000


def test_source_date_epoch_as_a_build_arg_sets_the_epoch(tmp_path: Path, capsys) -> None:
    context = write_context(tmp_path / "ctx", {"a.txt": "a\n"})
    (context / "Buildfile").write_text("FROM scratch\nCOPY a.txt /\n")
    code = cli_main(["--root", str(tmp_path / "s"), "build", "--progress", "plain", "--build-arg",
                     "SOURCE_DATE_EPOCH=1234", "-t", "epoch:1", str(context)])
    assert code == 0
    assert "not consumed" not in capsys.readouterr().err
    from builder.image.store import Store

    config = Store.open(tmp_path / "s").load_image("epoch:1").config
    assert config["created"] == "1970-01-01T00:20:34Z"
    assert cli_main(["--root", str(tmp_path / "s"), "build", "--build-arg", "SOURCE_DATE_EPOCH=soon", str(context)]) == 1
    assert "--build-arg SOURCE_DATE_EPOCH='soon' is not a valid number" in capsys.readouterr().err


def test_a_reader_that_leaves_early_ends_the_export_quietly(tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {"Buildfile": "FROM scratch\nCOPY big /\n", "big": "x" * (4 << 20)})
    completed = subprocess.run(
        f"{sys.executable} -m builder.cli --root {tmp_path / 's'} build -q -o type=docker,dest=- {context} | head -c 100 >/dev/null",
        shell=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert "Broken pipe" not in completed.stderr and "Traceback" not in completed.stderr, completed.stderr
