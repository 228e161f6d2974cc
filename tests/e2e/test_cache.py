"""The step cache: reused exactly when a step could not give a different result, and says why not."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers import write_context

import builder
from builder.cli import main as cli_main

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")

BUILDFILE = (
    "FROM busybox\n"
    "ARG MODE=dev\n"
    "COPY config/ /etc/app/\n"
    "RUN cat /etc/app/* > /combined\n"
    "COPY src/ /src/\n"
    "RUN ls /src > /listing && echo $MODE > /mode\n"
    "ENV DONE=1\n"
)


def _context(tmp_path: Path) -> Path:
    files = {"Buildfile": BUILDFILE, "config/a.conf": "a=1\n", "config/b.conf": "b=2\n", ".dockerignore": "src/*.log\n"}
    files.update({f"src/file{i}.txt": f"content {i}\n" for i in range(50)})
    return write_context(tmp_path / "ctx", files)


def _cached(result) -> list[bool]:
    return [step.cached for step in result.steps[1:]]  # step 0 is FROM


def test_noop_rebuild_runs_nothing_and_keeps_the_digest(tmp_path: Path, busybox_store) -> None:
    context = _context(tmp_path)
    first = builder.build(context, root=busybox_store.root)
    assert _cached(first) == [False] * 6
    second = builder.build(context, root=busybox_store.root)
    assert _cached(second) == [True] * 6
    assert second.image_id == first.image_id


def test_each_input_invalidates_exactly_what_follows_it(tmp_path: Path, busybox_store) -> None:
    context = _context(tmp_path)
    builder.build(context, root=busybox_store.root)

    (context / "src/file7.txt").write_text("changed\n")
    result = builder.build(context, root=busybox_store.root)
    assert _cached(result) == [True, True, True, False, False, False]
    assert "source files changed" in result.steps[4].cache_reason

    (context / "config/a.conf").write_text("a=2\n")
    result = builder.build(context, root=busybox_store.root)
    assert _cached(result) == [True, False, False, False, False, False]

    result = builder.build(context, root=busybox_store.root, build_args={"MODE": "prod"})
    # Docker's rule: an ARG invalidates at its first use (the RUNs), not where it is declared.
    assert _cached(result) == [True, True, False, False, False, False]
    assert "MODE" in result.steps[3].cache_reason

    (context / "Buildfile").write_text(BUILDFILE.replace("ENV DONE=1", "ENV DONE=2"))
    result = builder.build(context, root=busybox_store.root, build_args={"MODE": "prod"})
    assert _cached(result) == [True, True, True, True, True, False]
    assert "instruction changed" in result.steps[6].cache_reason


def test_touch_and_ignored_files_keep_everything_cached(tmp_path: Path, busybox_store) -> None:
    context = _context(tmp_path)
    first = builder.build(context, root=busybox_store.root)
    later = time.time() + 1000
    for path in context.rglob("*"):
        os.utime(path, (later, later))
    (context / "src/debug.log").write_text("ignored by .dockerignore\n")
    second = builder.build(context, root=busybox_store.root)
    assert _cached(second) == [True] * 6
    assert second.image_id == first.image_id


def test_no_cache_and_explain_cache(tmp_path: Path, busybox_store, capsys) -> None:
    context = _context(tmp_path)
    builder.build(context, root=busybox_store.root)
    result = builder.build(context, root=busybox_store.root, no_cache=True)
    assert _cached(result) == [False] * 6
    assert result.steps[1].cache_reason == "cache disabled (--no-cache)"
    code = cli_main(["--root", str(busybox_store.root), "build", "--progress", "quiet", "--explain-cache", str(context)])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("CACHED") == 6


def test_no_cache_filter_reruns_only_that_stage(tmp_path: Path, busybox_store) -> None:
    text = "FROM busybox AS deps\nRUN echo deps > /deps\nFROM deps AS app\nRUN echo app > /app\nFROM app\nRUN echo last > /last\n"
    context = write_context(tmp_path / "ctx", {"Buildfile": text})
    builder.build(context, root=busybox_store.root)
    result = builder.build(context, root=busybox_store.root, no_cache_filter=["app"])
    by_text = {step.instruction: step.cached for step in result.steps}
    assert by_text["RUN echo deps > /deps"] is True
    assert by_text["RUN echo app > /app"] is False
    # The last stage reruns only if the app layer came out different (see the next test).
    unnamed = builder.build(context, root=busybox_store.root, no_cache_filter=["stage-2"])
    assert {step.instruction: step.cached for step in unnamed.steps}["RUN echo app > /app"] is True


def test_a_rerun_step_with_new_output_invalidates_what_follows(tmp_path: Path, busybox_store) -> None:
    text = "FROM busybox AS rand\nRUN head -c 16 /dev/urandom | od -x > /rand\nFROM rand\nRUN cp /rand /copy\n"
    context = write_context(tmp_path / "ctx", {"Buildfile": text})
    builder.build(context, root=busybox_store.root)
    out = tmp_path / "out"
    result = builder.build(context, root=busybox_store.root, no_cache_filter=["rand"], outputs=[f"type=local,dest={out}"])
    assert (out / "copy").read_text() == (out / "rand").read_text()
    assert not result.steps[-1].cached


def test_copy_link_layer_is_reused_on_a_changed_base(tmp_path: Path, busybox_store, monkeypatch) -> None:
    import builder.solve.copy as copy_module  # copystep takes stage_copy from there when a COPY runs

    calls = []
    real = copy_module.stage_copy
    monkeypatch.setattr(copy_module, "stage_copy", lambda *a, **k: calls.append(1) or real(*a, **k))
    context = write_context(tmp_path / "ctx", {"data.txt": "payload\n"})
    first = builder.build(context, buildfile_text="FROM busybox\nRUN echo 1 > /a\nCOPY --link data.txt /srv/\n",
                          root=busybox_store.root)
    assert len(calls) == 1
    second = builder.build(context, buildfile_text="FROM busybox\nRUN echo 2 > /a\nCOPY --link data.txt /srv/\n",
                           root=busybox_store.root)
    assert len(calls) == 1, "the --link layer must come from the cache, not a new copy"
    assert not second.steps[-1].cached  # the step itself ran again: its parent changed
    assert second.manifest["layers"][-1] == first.manifest["layers"][-1]
    plain = builder.build(context, buildfile_text="FROM busybox\nRUN echo 3 > /a\nCOPY data.txt /srv/\n",
                          root=busybox_store.root)
    assert len(calls) == 2 and plain.manifest["layers"][-1]["digest"]


def test_add_from_a_url_reruns_when_the_remote_content_changes(tmp_path: Path, busybox_store) -> None:
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    (served / "file.txt").write_text("version 1\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/file.txt"
        context = write_context(tmp_path / "ctx", {})
        text = f"FROM busybox\nADD {url} /remote.txt\nRUN cat /remote.txt > /seen\n"
        out = tmp_path / "out"
        builder.build(context, buildfile_text=text, root=busybox_store.root, outputs=[f"type=local,dest={out}"])
        assert (out / "seen").read_text() == "version 1\n"
        assert builder.build(context, buildfile_text=text, root=busybox_store.root).steps[1].cached
        (served / "file.txt").write_text("version 2, longer\n")
        out2 = tmp_path / "out2"
        result = builder.build(context, buildfile_text=text, root=busybox_store.root, outputs=[f"type=local,dest={out2}"])
        assert not result.steps[1].cached
        assert (out2 / "seen").read_text() == "version 2, longer\n"
    finally:
        server.shutdown()
