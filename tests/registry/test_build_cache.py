"""A build cache shared through a registry: store A builds and exports, a fresh store B (a new CI
machine) starts warm, and what B moves through the registry is counted at a proxy in front of it."""
from __future__ import annotations

import io
import json
import os
import re
import urllib.parse
from pathlib import Path

import pytest
from fixtures.concurrency import run_at_once
from registry_helpers import PASSWORD, USERNAME, free_port

import builder
from builder.cli import main as cli_main
from builder.errors import CacheError
from builder.image.importer import import_rootfs
from builder.image.store import Store
from builder.registry import RegistryClient, push

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")

# Every RUN writes random bytes: a step run again can never give the layer the cache holds.
MULTI_STAGE = """\
FROM {base} AS tools
RUN head -c 64 /dev/urandom > /rand
COPY a.txt /a.txt
RUN cat /a.txt /rand > /built

FROM {base}
ENV MODE=test
COPY --from=tools /built /app/built
COPY b.txt /b.txt
RUN head -c 32 /dev/urandom > /r2 && cat /b.txt >> /r2
"""

# For an inline (mode=min) cache: the final stage is built FROM the other, so its steps are the image's.
CHAINED = """\
FROM {base} AS deps
RUN head -c 48 /dev/urandom > /deps
COPY a.txt /a.txt

FROM deps
COPY b.txt /b.txt
RUN head -c 16 /dev/urandom > /app && cat /b.txt >> /app
"""


def _context(path: Path, text: str, b_text: str = "b\n") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Buildfile").write_text(text)
    (path / "a.txt").write_text("a\n")
    (path / "b.txt").write_text(b_text)
    return path


def _store(path: Path, busybox_tar: Path, tag: str = "busybox:latest") -> Store:
    store = Store.open(path)
    import_rootfs(store, busybox_tar, tag)
    return store


def _steps(result) -> list:
    return [step for step in result.steps if not step.instruction.startswith("FROM")]


def _messages(events) -> list[str]:
    return [event.text for event in events if event.kind == "message"]


def _uploaded(log) -> set[str]:
    """Digests whose bytes were PUT (a mount is a POST with ?mount= and moves none)."""
    found = set()
    for method, path, status in log:
        if method == "PUT" and "/blobs/uploads/" in path and status in (201, 204):
            found |= set(urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("digest", []))
    return found


def _downloaded(log) -> set[str]:
    return {m.group(1) for method, path, status in log if method == "GET" and status == 200
            for m in [re.search(r"/blobs/(sha256:[0-9a-f]{64})$", path)] if m}


def _layers(host: str, repository: str, tag: str) -> list[str]:
    manifest = json.loads(RegistryClient(host).get_manifest(repository, tag).data)
    return [layer["digest"] for layer in manifest["layers"]]


def test_a_fresh_store_starts_warm_from_a_registry_cache_and_moves_no_layer(
        tmp_path: Path, busybox_tar: Path, fault_proxy) -> None:
    host = fault_proxy.host
    prefix = tmp_path.name.lower()
    base = f"{host}/{prefix}/busybox:1"
    cache = f"{host}/{prefix}/cache:main"
    # A has the base built here (uncompressed layer) and pushes it; B will pull it (gzip layer): the
    # same image ID, two manifests. Steps key on the image ID, so the cache serves both.
    a = _store(tmp_path / "A", busybox_tar, base)
    push(a, base)
    context = _context(tmp_path / "ctx", MULTI_STAGE.format(base=base))
    image_a = f"{host}/{prefix}/app:a"
    assert cli_main(["--root", str(a.root), "build", "--progress", "quiet", "-t", image_a, "--push",
                     "--cache-to", f"type=registry,ref={cache},mode=max", str(context)]) == 0
    built = a.load_image(image_a)

    fault_proxy.clear()
    events: list = []
    image_b = f"{host}/{prefix}/other:b"  # another repository of the registry: layers are mounted
    warm = builder.build(context, root=tmp_path / "B", cache_from=[cache], tags=[image_b],
                         outputs=[f"type=registry,name={image_b}"], on_event=events.append)
    assert [step.cached for step in _steps(warm)] == [True] * 7
    assert {step.cache_source for step in _steps(warm)} == {f"registry {cache}"}
    assert warm.image_id == built.config_digest, "the random bytes of every RUN came from the cache"
    assert f"found in registry {cache}" in _messages(events)

    cached_layers = set(_layers(host, f"{prefix}/cache", "main"))
    pushed = _layers(host, f"{prefix}/other", "b")
    assert set(pushed[1:]) <= cached_layers  # every layer above the base is the cache's blob
    assert _uploaded(fault_proxy.log) <= {warm.image_id}, "only the image config was uploaded"
    assert not _downloaded(fault_proxy.log) & cached_layers, "no cached layer passed through B"
    assert pushed == _layers(host, f"{prefix}/app", "a")
    b = Store.open(tmp_path / "B")
    assert {b.lazy_layer(digest).diff_id for digest in b.lazy.digests()} == {
        step.layer_diff_id for step in _steps(warm) if step.layer_diff_id}

    # Later, something needs the bytes: they are fetched then, checked, and are A's.
    out = tmp_path / "out"
    builder.build(context, root=b.root, cache_from=[cache], outputs=[f"type=local,dest={out}"])
    tools = {step.layer_diff_id for step in warm.steps if step.stage == "tools" and step.layer_diff_id}
    assert {b.lazy_layer(digest).diff_id for digest in b.lazy.digests()} == tools, "the image's own are fetched"
    assert b.fsck() == []
    a_out = tmp_path / "a-out"
    builder.build(context, root=a.root, outputs=[f"type=local,dest={a_out}"])
    assert (out / "r2").read_bytes() == (a_out / "r2").read_bytes()


def test_the_cache_and_the_image_share_their_blobs_and_each_is_uploaded_once(
        tmp_path: Path, busybox_tar: Path, fault_proxy) -> None:
    host = fault_proxy.host
    prefix = tmp_path.name.lower()
    image = f"{host}/{prefix}/app:1"
    context = _context(tmp_path / "ctx", CHAINED.format(base="busybox"))
    builder.build(context, root=_store(tmp_path / "A", busybox_tar).root, compression="zstd",
                  outputs=[f"type=registry,name={image}"], cache_to=[f"type=registry,ref={host}/{prefix}/app:cache"])
    manifest = json.loads(RegistryClient(host).get_manifest(f"{prefix}/app", "cache").data)
    image_layers = _layers(host, f"{prefix}/app", "1")
    assert {layer["digest"] for layer in manifest["layers"]} <= set(image_layers)
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    puts = [path for method, path, status in fault_proxy.log if method == "PUT" and "/blobs/uploads/" in path]
    uploaded = [urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)["digest"][0] for path in puts]
    assert sorted(uploaded) == sorted(set(uploaded)), "no blob was uploaded twice"
    assert set(image_layers) <= set(uploaded)


def test_an_inline_cache_travels_in_the_pushed_image(tmp_path: Path, busybox_tar: Path, registry) -> None:
    prefix = tmp_path.name.lower()
    image = f"{registry.host}/{prefix}/app:1"
    context = _context(tmp_path / "ctx", CHAINED.format(base="busybox"))
    a = _store(tmp_path / "A", busybox_tar)
    built = builder.build(context, root=a.root, tags=[image], cache_to=["type=inline"],
                          outputs=[f"type=registry,name={image}"])
    annotations = json.loads(RegistryClient(registry.host).get_manifest(f"{prefix}/app", "1").data)["annotations"]
    assert json.loads(annotations["builder.cache.v1"])["format"] == "builder.cache.v1"

    b = _store(tmp_path / "B", busybox_tar)
    warm = builder.build(context, root=b.root, cache_from=[image], cache_to=["type=inline"])
    assert [step.cached for step in _steps(warm)] == [True] * 4
    assert warm.image_id == built.image_id
    assert warm.manifest["annotations"] == built.manifest["annotations"], "the same record travels on"

    _context(tmp_path / "ctx", CHAINED.format(base="busybox"), b_text="edited\n")
    c = _store(tmp_path / "C", busybox_tar)
    edited = builder.build(context, root=c.root, cache_from=[image])
    assert [step.instruction for step in _steps(edited) if not step.cached] == [
        "COPY b.txt /b.txt", "RUN head -c 16 /dev/urandom > /app && cat /b.txt >> /app"]


def test_a_registry_with_basic_auth_serves_the_cache_to_those_with_credentials(
        tmp_path: Path, busybox_tar: Path, basic_registry, isolated_docker_config) -> None:
    cache = f"{basic_registry.host}/{tmp_path.name.lower()}/cache:1"
    context = _context(tmp_path / "ctx", CHAINED.format(base="busybox"))
    config = isolated_docker_config / "config.json"
    config.write_text(json.dumps({"auths": {basic_registry.host: {"username": USERNAME, "password": PASSWORD}}}))
    a = _store(tmp_path / "A", busybox_tar)
    built = builder.build(context, root=a.root, cache_to=[f"type=registry,ref={cache},mode=max"])

    config.write_text("{}")
    events: list = []
    cold = builder.build(context, root=_store(tmp_path / "B", busybox_tar).root, cache_from=[cache],
                         on_event=events.append)
    assert not any(step.cached for step in _steps(cold))
    assert any("building without it" in text for text in _messages(events)), _messages(events)
    assert "requires a login" in _messages(events)[0]

    config.write_text(json.dumps({"auths": {basic_registry.host: {"username": USERNAME, "password": PASSWORD}}}))
    c = _store(tmp_path / "C", busybox_tar)
    warm = builder.build(context, root=c.root, cache_from=[cache], outputs=[f"type=local,dest={tmp_path / 'out'}"])
    assert all(step.cached for step in _steps(warm)) and warm.image_id == built.image_id
    assert (tmp_path / "out" / "app").stat().st_size == 16 + len("b\n")


# -- faults -------------------------------------------------------------------------------------------


def test_a_missing_ref_or_a_registry_that_is_down_is_a_warning(tmp_path: Path, busybox_tar: Path, registry) -> None:
    context = _context(tmp_path / "ctx", CHAINED.format(base="busybox"))
    down = f"127.0.0.1:{free_port()}"
    events: list = []
    result = builder.build(context, root=_store(tmp_path / "A", busybox_tar).root,
                           cache_from=[f"{registry.host}/{tmp_path.name.lower()}/nothing:here", f"{down}/cache:1"],
                           cache_to=[f"type=registry,ref={down}/cache:2"], on_event=events.append)
    assert not any(step.cached for step in _steps(result))
    warnings = [text for text in _messages(events) if text.startswith("warning:")]
    assert len(warnings) == 3, warnings
    assert "nothing:here cannot be used" in warnings[0] and "not found" in warnings[0]
    assert f"{down}/cache:1 cannot be used" in warnings[1]
    assert f"cannot export the build cache to registry {down}/cache:2" in warnings[2]
    with pytest.raises(CacheError, match="cannot export the build cache"):
        builder.build(context, root=tmp_path / "A", cache_to=[f"type=registry,ref={down}/cache:2,ignore-error=false"])


def test_a_corrupt_or_foreign_record_is_a_warning_and_nothing_is_reused(
        tmp_path: Path, busybox_tar: Path, fault_proxy) -> None:
    host = fault_proxy.host
    prefix = tmp_path.name.lower()
    context = _context(tmp_path / "ctx", CHAINED.format(base="busybox"))
    a = _store(tmp_path / "A", busybox_tar)
    builder.build(context, root=a.root, cache_to=[f"type=registry,ref={host}/{prefix}/cache:1,mode=max"],
                  tags=[f"{host}/{prefix}/plain:1"], outputs=[f"type=registry,name={host}/{prefix}/plain:1"])
    record = json.loads(RegistryClient(host).get_manifest(f"{prefix}/cache", "1").data)["config"]["digest"]
    fault_proxy.inject("GET", f"/blobs/{record}", "corrupt")
    events: list = []
    result = builder.build(context, root=_store(tmp_path / "B", busybox_tar).root, on_event=events.append,
                           cache_from=[f"{host}/{prefix}/cache:1", f"{host}/{prefix}/plain:1"])
    assert not any(step.cached for step in _steps(result))
    warnings = [text for text in _messages(events) if text.startswith("warning:")]
    assert "content has digest" in warnings[0]
    assert "holds no build cache" in warnings[1]  # an image pushed without an inline cache


def test_a_record_naming_a_blob_the_registry_lost_is_a_miss_for_those_steps(
        tmp_path: Path, busybox_tar: Path, registry) -> None:
    prefix = tmp_path.name.lower()
    cache = f"{registry.host}/{prefix}/cache:1"
    context = _context(tmp_path / "ctx", CHAINED.format(base="busybox"))
    built = builder.build(context, root=_store(tmp_path / "A", busybox_tar).root,
                          cache_to=[f"type=registry,ref={cache},mode=max"])
    client = RegistryClient(registry.host)
    layers = _layers(registry.host, f"{prefix}/cache", "1")
    sink = io.BytesIO()
    client.fetch_blob(f"{prefix}/cache", json.loads(client.get_manifest(f"{prefix}/cache", "1").data)["config"]["digest"],
                      sink)
    record = json.loads(sink.getvalue())
    copy_b = next(step for step in built.steps if step.instruction == "COPY b.txt /b.txt")
    lost = record["steps"][copy_b.cache_key]["layer"]["digest"]
    assert lost in layers
    with client.request("DELETE", f"/v2/{prefix}/cache/blobs/{lost}", [f"repository:{prefix}/cache:*"]) as answer:
        assert answer.status == 202
        answer.drain()
    events: list = []
    result = builder.build(context, root=_store(tmp_path / "B", busybox_tar).root, cache_from=[cache],
                           on_event=events.append)
    # The COPY ran again and made the same layer: the RUN after it still comes from the cache.
    assert [step.instruction for step in _steps(result) if not step.cached] == ["COPY b.txt /b.txt"]
    assert any(f"no longer has layer {lost}" in text for text in _messages(events))


def test_two_builds_exporting_to_one_ref_at_once_leave_one_whole_record(
        tmp_path: Path, busybox_tar: Path, registry) -> None:
    cache = f"{registry.host}/{tmp_path.name.lower()}/cache:shared"
    contexts = [_context(tmp_path / f"ctx{n}", CHAINED.format(base="busybox"), f"{n}\n") for n in (0, 1)]
    stores = [_store(tmp_path / f"A{n}", busybox_tar) for n in (0, 1)]
    results, errors = run_at_once(lambda n: builder.build(contexts[n], root=stores[n].root,
                                                         cache_to=[f"type=registry,ref={cache},mode=max"]), (0, 1))
    assert errors == []
    warm = [builder.build(contexts[n], root=_store(tmp_path / f"B{n}", busybox_tar).root, cache_from=[cache],
                          outputs=[f"type=local,dest={tmp_path / f'out{n}'}"]) for n in (0, 1)]
    winners = [n for n in (0, 1) if all(step.cached for step in _steps(warm[n]))]
    assert len(winners) == 1, "the record is one build's, whole"
    assert warm[winners[0]].image_id == results[winners[0]].image_id  # type: ignore[attr-defined]
    loser = 1 - winners[0]
    assert [step.cached for step in _steps(warm[loser])] == [True, True, False, False]
