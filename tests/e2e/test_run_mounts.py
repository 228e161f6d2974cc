"""RUN --mount: what each kind shows the command, what it leaves in layers and cache keys."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import layer_file_contents, layer_members, write_context

import builder
from builder.errors import PlanError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")


def test_bind_mount_sees_the_context_without_ignored_files_and_counts_in_the_key(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {"src/a.txt": "A\n", "src/skip.log": "ignored\n", ".dockerignore": "**/*.log\n"})
    text = "FROM busybox\nRUN --mount=type=bind,source=src,target=/mnt/src ls /mnt/src > /listing && cat /mnt/src/a.txt >> /listing\n"
    first = builder.build(context, buildfile_text=text, root=busybox_store.root)
    layer = layer_members(busybox_store, first.manifest["layers"][-1]["digest"])
    assert sorted(layer) == ["listing"], "the mount point must not reach the layer"
    assert layer_file_contents(busybox_store, first.manifest["layers"][-1]["digest"])["listing"] == b"a.txt\nA\n"
    (context / "src/skip.log").write_text("still ignored, new content\n")
    assert builder.build(context, buildfile_text=text, root=busybox_store.root).steps[-1].cached
    (context / "src/a.txt").write_text("B\n")
    again = builder.build(context, buildfile_text=text, root=busybox_store.root)
    assert not again.steps[-1].cached
    assert "RUN --mount inputs changed" in again.steps[-1].cache_reason


def test_cache_mount_persists_between_builds_and_stays_out_of_layers(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {})
    text = (
        "FROM busybox\nARG N\n"
        "RUN --mount=type=cache,target=/var/cache/thing,sharing=locked "
        "echo run $N >> /var/cache/thing/log && cp /var/cache/thing/log /seen\n"
    )
    builder.build(context, buildfile_text=text, root=busybox_store.root, build_args={"N": "1"})
    second = builder.build(context, buildfile_text=text, root=busybox_store.root, build_args={"N": "2"})
    digest = second.manifest["layers"][-1]["digest"]
    assert layer_file_contents(busybox_store, digest)["seen"] == b"run 1\nrun 2\n"
    assert not any(name.startswith("var/cache/thing/") for name in layer_members(busybox_store, digest))


def test_secret_is_readable_but_never_stored(tmp_path: Path, busybox_store) -> None:
    secret = tmp_path / "token.txt"
    secret.write_text("s3cr3t-value\n")
    context = write_context(tmp_path / "ctx", {})
    text = (
        "FROM busybox\n"
        "RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /secret-length\n"
        "RUN --mount=type=tmpfs,target=/scratch echo temp > /scratch/x && ls /scratch > /scratch-listing\n"
    )
    result = builder.build(context, buildfile_text=text, root=busybox_store.root, secrets={"token": secret})
    layers = result.manifest["layers"]
    files = layer_file_contents(busybox_store, layers[-2]["digest"])
    assert files["secret-length"].strip() == b"13"
    assert "run/secrets/token" not in layer_members(busybox_store, layers[-2]["digest"])
    assert "scratch/x" not in layer_members(busybox_store, layers[-1]["digest"])
    for path in Path(busybox_store.root).rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert b"s3cr3t-value" not in path.read_bytes(), f"secret leaked into {path}"
    secret.write_text("another-value\n")
    again = builder.build(context, buildfile_text=text, root=busybox_store.root, secrets={"token": secret})
    assert again.steps[1].cached, "a secret's content is not part of the cache key"


def test_missing_required_secret_and_unknown_mount_type_are_errors(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {})
    with pytest.raises(PlanError, match="secret 'token' is required") as caught:
        builder.build(context, buildfile_text="FROM busybox\nRUN --mount=type=secret,id=token,required=true cat /run/secrets/token\n",
                      root=busybox_store.root)
    assert caught.value.pos.line == 2
    with pytest.raises(PlanError, match="type=ssh is not supported"):
        builder.build(context, buildfile_text="FROM busybox\nRUN --mount=type=ssh true\n", root=busybox_store.root)


def test_insecure_security_mode_is_refused(tmp_path: Path, busybox_store) -> None:
    with pytest.raises(PlanError, match="--security=insecure is not supported"):
        builder.build(write_context(tmp_path / "ctx", {}), buildfile_text="FROM busybox\nRUN --security=insecure true\n",
                      root=busybox_store.root)


@pytest.mark.parametrize("options, writable", [
    ("type=bind,target=/m", False),
    ("type=bind,target=/m,rw", True),
    ("type=bind,target=/m,ro=false", True),
    ("type=bind,target=/m,readwrite=true,ro", False),
    ("type=cache,target=/m", True),
    ("type=cache,target=/m,ro", False),
    ("type=cache,target=/m,readonly=true", False),
    ("type=cache,target=/m,rw=false", False),
])
def test_mount_writability_follows_buildkits_flags(tmp_path: Path, busybox_store, options: str, writable: bool) -> None:
    context = write_context(tmp_path / "ctx", {"x": "x\n"})
    text = f"FROM busybox\nRUN --mount={options} (touch /m/probe && echo yes || echo no) > /writable\n"
    result = builder.build(context, buildfile_text=text, root=busybox_store.root)
    seen = layer_file_contents(busybox_store, result.manifest["layers"][-1]["digest"])["writable"]
    assert seen == (b"yes\n" if writable else b"no\n")
