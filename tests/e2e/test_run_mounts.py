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


def test_cache_mounts_are_keyed_by_id_and_their_uid_gid_mode(tmp_path: Path, busybox_store) -> None:
    # What dockerd's BuildKit shows for the same steps: a cache is its id plus, when any is
    # given, uid/gid/mode (uid=0 alone and mode=0755 alone make the same seed); sharing and
    # the target do not count once the id is given.
    context = write_context(tmp_path / "ctx", {})
    text = (
        "FROM busybox\n"
        "RUN --mount=type=cache,target=/c,id=k echo plain > /c/plain\n"
        "RUN --mount=type=cache,target=/c,id=k,uid=1000 echo u1000 > /c/u1000\n"
        "RUN --mount=type=cache,target=/c,id=k,uid=0 echo u0 > /c/u0\n"
        "RUN --mount=type=cache,target=/d,id=k,sharing=locked ls /d > /seen-default\n"
        "RUN --mount=type=cache,target=/e,id=k,uid=1000,sharing=private ls /e > /seen-uid1000\n"
        "RUN --mount=type=cache,target=/c,id=k,mode=0755 ls /c > /seen-mode755\n"
        "RUN --mount=type=cache,target=/c,id=k,gid=50 ls /c > /seen-gid50\n"
    )
    result = builder.build(context, buildfile_text=text, root=busybox_store.root)
    layers = result.manifest["layers"]
    seen = {name: data for layer in layers[-4:] for name, data in layer_file_contents(busybox_store, layer["digest"]).items()}
    assert seen == {"seen-default": b"plain\n", "seen-uid1000": b"u1000\n", "seen-mode755": b"u0\n", "seen-gid50": b""}


@pytest.mark.parametrize("options, shown", [
    ("", "755 0:0"),
    (",uid=1000,gid=50", "755 1000:50"),
    (",mode=0777", "777 0:0"),  # the builder's umask does not apply, as under buildkitd
    (",mode=1777", "777 0:0"),  # BuildKit's mkdir keeps the permission bits only
    (",mode=4750,uid=1000", "750 1000:0"),
])
def test_a_new_cache_dir_gets_the_mounts_owner_and_mode(tmp_path: Path, busybox_store, options: str, shown: str) -> None:
    text = f"FROM busybox\nRUN --mount=type=cache,target=/c{options} stat -c '%a %u:%g' /c > /stat\n"
    result = builder.build(write_context(tmp_path / "ctx", {}), buildfile_text=text, root=busybox_store.root)
    assert layer_file_contents(busybox_store, result.manifest["layers"][-1]["digest"])["stat"] == f"{shown}\n".encode()


def test_a_cache_without_id_is_named_by_its_target_as_written(tmp_path: Path, busybox_store) -> None:
    # BuildKit's default id is path.Clean(target): a relative target is the same cache in every
    # WORKDIR, and not the cache of the absolute path it lands on.
    text = (
        "FROM busybox\n"
        "WORKDIR /w1\n"
        "RUN --mount=type=cache,target=rel echo w1 > rel/w1\n"
        "WORKDIR /w2\n"
        "RUN --mount=type=cache,target=./rel/ ls rel > /seen-relative\n"
        "RUN --mount=type=cache,target=/w2/rel ls /w2/rel > /seen-absolute\n"
        "RUN --mount=type=cache,target=/x,id=rel ls /x > /seen-id\n"
    )
    result = builder.build(write_context(tmp_path / "ctx", {}), buildfile_text=text, root=busybox_store.root)
    seen = {name: data for layer in result.manifest["layers"][-3:]
            for name, data in layer_file_contents(busybox_store, layer["digest"]).items()}
    assert seen == {"seen-relative": b"w1\n", "seen-absolute": b"", "seen-id": b"w1\n"}
