"""Pulls and pushes against a real registry report their bytes (rate-limited progress events),
and `build --push` says what it pushed in every progress mode but quiet."""
from __future__ import annotations

import json
import os
import re
import time

import pytest
from registry_helpers import make_image, push_raw

import builder
from builder.cli import main as cli_main
from builder.image.store import Store
from builder.progress import EventKind
from builder.registry import RegistryClient, pull, push


def _check_transfer(events, digest: str, size: int, seconds: float) -> None:
    mine = [event for event in events if event.kind is EventKind.PROGRESS and event.id == digest]
    assert mine, f"no progress for {digest}"
    assert all(event.total == size for event in mine)
    currents = [event.current for event in mine]
    assert currents == sorted(currents) and currents[-1] == size
    assert len(mine) <= seconds * 10 + 3, "at most about ten a second per item"


def test_a_pull_reports_each_layer_s_bytes(registry, tmp_path) -> None:
    payload = os.urandom(3 * 1024 * 1024)  # random: the layer stays big compressed
    image = make_image("progress-pull", [({"big.bin": payload}, "gzip"), ({"small": b"s"}, "none")])
    push_raw(RegistryClient(registry.host), "test/progress-pull", image, "v1")
    events = []
    began = time.monotonic()
    record = pull(Store.open(tmp_path / "store"), f"{registry.host}/test/progress-pull:v1", on_event=events.append,
                  step=7)
    seconds = time.monotonic() - began
    assert all(event.step == 7 for event in events)
    assert events[0].kind is EventKind.PULL_START and events[0].text == f"{registry.host}/test/progress-pull:v1"
    assert events[-1].kind is EventKind.PULL_DONE and events[-1].id == record.manifest_digest
    for layer in json.loads(image.manifest)["layers"]:
        _check_transfer(events, layer["digest"], layer["size"], seconds)


def test_a_push_reports_each_upload_s_bytes(registry, tmp_path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    store_root = tmp_path / "store"
    reference = f"{registry.host}/test/progress-push:1"
    builder.build(context, buildfile_text="FROM scratch\nCOPY big.bin /\n", root=store_root, tags=[reference])
    events = []
    began = time.monotonic()
    digest = push(Store.open(store_root), reference, on_event=events.append, step=3)
    seconds = time.monotonic() - began
    assert (events[0].kind, events[0].text) == (EventKind.PUSH_START, reference)
    assert (events[-1].kind, events[-1].id) == (EventKind.PUSH_DONE, digest)
    shipped = json.loads(RegistryClient(registry.host).get_manifest("test/progress-push", "1").data)
    for layer in shipped["layers"]:
        _check_transfer(events, layer["digest"], layer["size"], seconds)


@pytest.mark.parametrize("mode", ["plain", "rawjson", "tty", "quiet"])
def test_build_push_says_what_it_pushed(registry, tmp_path, capsys, mode) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a.txt").write_text(mode)
    (context / "Buildfile").write_text("FROM scratch\nCOPY a.txt /a\n")
    reference = f"{registry.host}/test/pushed-{mode}:1"
    code = cli_main(["--root", str(tmp_path / "store"), "build", "--progress", mode, "--push", "-t", reference,
                     str(context)])
    err = capsys.readouterr().err
    assert code == 0, err
    digest = RegistryClient(registry.host).get_manifest(f"test/pushed-{mode}", "1").digest
    if mode == "quiet":
        assert err == ""
    elif mode == "rawjson":
        done = [json.loads(line) for line in err.splitlines() if '"push-done"' in line]
        assert [(record["text"], record["id"], record["step"]) for record in done] == [(reference, digest, 3)]
    elif mode == "plain":
        assert f"#3 pushing {reference}\n" in err
        assert f"#3 pushed {reference}@{digest} " in err
    else:
        assert f"\npushed {reference}@{digest}\n" in re.sub(r"\x1b\[[0-9;]*m", "", err), "in the summary"
