"""`--cache-to type=local` / `--cache-from type=local`: a cache in an OCI layout dir, as CI systems
that keep directories between runs use it. Store A builds and exports; fresh stores start warm."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fixtures.concurrency import run_at_once

import builder
from builder.cli import main as cli_main
from builder.image.importer import import_rootfs
from builder.image.store import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")

# Each RUN writes random bytes: a step that ran again can never give the layer the cache holds.
BUILDFILE = """\
FROM busybox AS tools
RUN head -c 64 /dev/urandom > /rand
COPY a.txt /a.txt
RUN cat /a.txt /rand > /built

FROM busybox
ENV MODE=test
COPY --from=tools /built /app/built
COPY b.txt /b.txt
RUN head -c 32 /dev/urandom > /r2 && cat /b.txt >> /r2
"""


def _context(path: Path, b_text: str = "b\n") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Buildfile").write_text(BUILDFILE)
    (path / "a.txt").write_text("a\n")
    (path / "b.txt").write_text(b_text)
    return path


def _store(path: Path, busybox_tar: Path) -> Store:
    store = Store.open(path)
    import_rootfs(store, busybox_tar, "busybox:latest")
    return store


def _steps(result) -> list:
    return [step for step in result.steps if not step.instruction.startswith("FROM")]


def _messages(events) -> list[str]:
    return [event.text for event in events if event.kind == "message"]


def test_a_fresh_store_takes_every_step_from_a_local_cache(tmp_path: Path, busybox_tar: Path) -> None:
    cache = tmp_path / "cache"
    a = _store(tmp_path / "A", busybox_tar)
    built = builder.build(_context(tmp_path / "ctx"), root=a.root, cache_to=[f"type=local,dest={cache},mode=max"])
    assert not any(step.cached for step in _steps(built))

    # Another machine: the context checked out elsewhere, with other mtimes and inodes.
    elsewhere = shutil.copytree(tmp_path / "ctx", tmp_path / "checkout" / "src")
    for path in elsewhere.iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))
    b = _store(tmp_path / "B", busybox_tar)
    events: list = []
    again = builder.build(elsewhere, root=b.root, cache_from=[f"type=local,src={cache}"], on_event=events.append)
    assert [step.cached for step in _steps(again)] == [True] * 7
    assert {step.cache_source for step in _steps(again)} == {f"local {cache}"}
    assert again.image_id == built.image_id, "the random bytes of every RUN came from the cache"
    assert f"found in local {cache}" in _messages(events)
    # Nothing needed a file system: every layer is still only in the cache dir.
    layer_diff_ids = {step.layer_diff_id for step in _steps(again) if step.layer_diff_id}
    lazy = {b.lazy_layer(digest).diff_id for digest in b.lazy.digests()}
    assert layer_diff_ids == lazy and len(lazy) == 6

    out = tmp_path / "out"
    builder.build(tmp_path / "ctx", root=b.root, cache_from=[f"type=local,src={cache}"],
                  outputs=[f"type=local,dest={out}"])
    a_out = tmp_path / "a-out"
    builder.build(tmp_path / "ctx", root=a.root, outputs=[f"type=local,dest={a_out}"])
    assert (out / "app/built").read_bytes() == (a_out / "app/built").read_bytes()
    assert (out / "r2").read_bytes() == (a_out / "r2").read_bytes()
    assert Store.open(b.root).fsck() == []


def test_editing_one_context_file_reruns_exactly_the_steps_after_it(tmp_path: Path, busybox_tar: Path) -> None:
    cache = tmp_path / "cache"
    a = _store(tmp_path / "A", busybox_tar)
    builder.build(_context(tmp_path / "ctx"), root=a.root, cache_to=[f"type=local,dest={cache},mode=max"])
    _context(tmp_path / "ctx", b_text="b, edited\n")
    b = _store(tmp_path / "B", busybox_tar)
    result = builder.build(tmp_path / "ctx", root=b.root, cache_from=[f"type=local,src={cache}"])
    ran = [step.instruction for step in _steps(result) if not step.cached]
    assert ran == ["COPY b.txt /b.txt", "RUN head -c 32 /dev/urandom > /r2 && cat /b.txt >> /r2"]
    # The COPY needed the file system below it: those layers were fetched; the tools stage's stay lazy.
    tools = {step.layer_diff_id for step in result.steps if step.stage == "tools" and step.layer_diff_id}
    lazy = {b.lazy_layer(digest).diff_id for digest in b.lazy.digests()}
    assert lazy == tools


def test_mode_min_exports_the_final_image_s_steps_only(tmp_path: Path, busybox_tar: Path) -> None:
    cache = tmp_path / "cache"
    a = _store(tmp_path / "A", busybox_tar)
    built = builder.build(_context(tmp_path / "ctx"), root=a.root, cache_to=[f"type=local,dest={cache}"])
    index = json.loads((cache / "index.json").read_text())
    [entry] = index["manifests"]
    manifest = json.loads((cache / "blobs/sha256" / entry["digest"].removeprefix("sha256:")).read_bytes())
    config = json.loads((cache / "blobs/sha256" / manifest["config"]["digest"].removeprefix("sha256:")).read_bytes())
    final = {step.cache_key for step in _steps(built) if step.stage != "tools"}
    assert set(config["steps"]) == final
    assert len(manifest["layers"]) == 3  # COPY --from, COPY, RUN of the final stage


def test_a_missing_or_broken_cache_is_a_warning_and_a_normal_build(tmp_path: Path, busybox_tar: Path) -> None:
    context = _context(tmp_path / "ctx")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "index.json").write_text("{not json")
    b = _store(tmp_path / "B", busybox_tar)
    events: list = []
    result = builder.build(context, root=b.root, cache_from=[f"type=local,src={tmp_path / 'missing'}",
                                                            f"type=local,src={broken}"], on_event=events.append)
    assert not any(step.cached for step in _steps(result))
    warnings = [text for text in _messages(events) if text.startswith("warning:")]
    assert len(warnings) == 2, warnings
    assert f"cache local {tmp_path / 'missing'} cannot be used" in warnings[0]
    assert "index.json is not JSON" in warnings[1] and "building without it" in warnings[1]


def test_a_lost_blob_is_a_miss_for_the_steps_that_need_it(tmp_path: Path, busybox_tar: Path) -> None:
    cache = tmp_path / "cache"
    a = _store(tmp_path / "A", busybox_tar)
    built = builder.build(_context(tmp_path / "ctx"), root=a.root, cache_to=[f"type=local,dest={cache},mode=max"])
    copy_b = next(step for step in built.steps if step.instruction == "COPY b.txt /b.txt")
    lost = next(digest for digest in _layout_layers(cache) if _diff_id_in_layout(cache, digest) == copy_b.layer_diff_id)
    (cache / "blobs/sha256" / lost.removeprefix("sha256:")).unlink()
    b = _store(tmp_path / "B", busybox_tar)
    events: list = []
    result = builder.build(tmp_path / "ctx", root=b.root, cache_from=[f"type=local,src={cache}"], on_event=events.append)
    # The COPY ran again and made the very layer the cache lost: the chain after it is the one the
    # record knows, so the RUN after it (random bytes) still comes from the cache.
    assert [step.instruction for step in _steps(result) if not step.cached] == ["COPY b.txt /b.txt"]
    assert any(f"no longer has layer {lost}" in text for text in _messages(events))
    assert [step.layer_diff_id for step in result.steps] == [step.layer_diff_id for step in built.steps]


def test_a_record_whose_chain_does_not_follow_from_its_step_is_not_believed(tmp_path: Path, busybox_tar: Path) -> None:
    cache = tmp_path / "cache"
    a = _store(tmp_path / "A", busybox_tar)
    built = builder.build(_context(tmp_path / "ctx"), root=a.root, cache_to=[f"type=local,dest={cache},mode=max"])
    env = next(step for step in built.steps if step.instruction == "ENV MODE=test")
    _rewrite_record(cache, lambda steps: steps[env.cache_key].update(chain="sha256:" + "0" * 64))
    b = _store(tmp_path / "B", busybox_tar)
    result = builder.build(tmp_path / "ctx", root=b.root, cache_from=[f"type=local,src={cache}"])
    assert [step.instruction for step in _steps(result) if not step.cached][0] == "ENV MODE=test"
    assert all(step.cached for step in result.steps if step.stage == "tools" and step.number > 1)


def _rewrite_record(cache: Path, change) -> None:
    """Edit the record in a layout as someone with write access to the cache could."""
    from builder.cache.layout import Layout
    from builder.image import oci

    layout = Layout(cache)
    index = layout.read_index()
    manifest = json.loads(layout.read_blob(index["manifests"][0]["digest"], 1 << 20))
    record = json.loads(layout.read_blob(manifest["config"]["digest"], 1 << 24))
    change(record["steps"])
    config = oci.canonical_json(record)
    layout.write_blob(oci.sha256_digest(config), lambda out: out.write(config))
    manifest["config"].update(digest=oci.sha256_digest(config), size=len(config))
    manifest_bytes = oci.canonical_json(manifest)
    layout.write_blob(oci.sha256_digest(manifest_bytes), lambda out: out.write(manifest_bytes))
    index["manifests"][0].update(digest=oci.sha256_digest(manifest_bytes), size=len(manifest_bytes))
    layout.write_top("index.json", oci.canonical_json(index))


def test_a_link_planted_in_the_cache_dir_is_not_followed(tmp_path: Path, busybox_tar: Path) -> None:
    cache = tmp_path / "cache"
    a = _store(tmp_path / "A", busybox_tar)
    builder.build(_context(tmp_path / "ctx"), root=a.root, cache_to=[f"type=local,dest={cache},mode=max"])
    elsewhere = tmp_path / "elsewhere"
    (cache / "blobs").rename(elsewhere)
    os.symlink(elsewhere, cache / "blobs")
    b = _store(tmp_path / "B", busybox_tar)
    events: list = []
    result = builder.build(tmp_path / "ctx", root=b.root, cache_from=[f"type=local,src={cache}"], on_event=events.append)
    assert not any(step.cached for step in _steps(result))
    assert any("symbolic link" in text for text in _messages(events))


def test_two_builds_exporting_to_one_dir_at_once_leave_one_whole_record(tmp_path: Path, busybox_tar: Path) -> None:
    cache = tmp_path / "cache"
    contexts = [_context(tmp_path / "ctx1", "one\n"), _context(tmp_path / "ctx2", "two\n")]
    stores = [_store(tmp_path / f"A{n}", busybox_tar) for n in (1, 2)]
    results, errors = run_at_once(lambda n: builder.build(contexts[n], root=stores[n].root,
                                                         cache_to=[f"type=local,dest={cache},mode=max"]), (0, 1))
    assert errors == []
    assert len(json.loads((cache / "index.json").read_text())["manifests"]) == 1
    fresh = [_store(tmp_path / f"B{n}", busybox_tar) for n in (0, 1)]
    warm = [builder.build(contexts[n], root=fresh[n].root, cache_from=[f"type=local,src={cache}"]) for n in (0, 1)]
    winners = [n for n in (0, 1) if all(step.cached for step in _steps(warm[n]))]
    assert len(winners) == 1, "the record is one build's, whole"
    assert warm[winners[0]].image_id == results[winners[0]].image_id  # type: ignore[attr-defined]


def test_explain_cache_names_the_cache_each_step_came_from(tmp_path: Path, busybox_tar: Path, capsys) -> None:
    cache = tmp_path / "cache"
    a = _store(tmp_path / "A", busybox_tar)
    context = _context(tmp_path / "ctx")
    assert cli_main(["--root", str(a.root), "build", "--progress", "quiet", "--cache-to",
                     f"type=local,dest={cache},mode=max", str(context)]) == 0
    b = _store(tmp_path / "B", busybox_tar)
    shutil.copy(context / "b.txt", tmp_path / "b.orig")
    (context / "b.txt").write_text("changed\n")
    capsys.readouterr()
    assert cli_main(["--root", str(b.root), "build", "--progress", "plain", "--explain-cache",
                     "--cache-from", f"type=local,src={cache}", str(context)]) == 0
    err = capsys.readouterr().err
    assert f"#3 [tools] COPY a.txt /a.txt: CACHED (from local {cache})" in err
    assert "#8 [stage-1] COPY b.txt /b.txt: RAN (" in err
    assert f"#2 found in local {cache}" in err


def _layout_layers(cache: Path) -> list[str]:
    index = json.loads((cache / "index.json").read_text())
    manifest = json.loads((cache / "blobs/sha256" / index["manifests"][0]["digest"].removeprefix("sha256:")).read_bytes())
    return [layer["digest"] for layer in manifest["layers"]]


def _diff_id_in_layout(cache: Path, digest: str) -> str:
    import gzip
    import hashlib

    data = gzip.decompress((cache / "blobs/sha256" / digest.removeprefix("sha256:")).read_bytes())
    return "sha256:" + hashlib.sha256(data).hexdigest()
