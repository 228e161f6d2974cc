"""Builds next to a registry: FROM pulls a missing base, --pull refreshes it, --push publishes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import builder
from builder.cli import main as cli_main
from builder.image.importer import import_rootfs
from builder.image.store import Store
from builder.registry import RegistryClient, pull, push

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")


def _context(tmp_path: Path, text: str) -> Path:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Buildfile").write_text(text)
    return context


def test_from_pulls_a_missing_base_and_push_publishes_the_result(tmp_path: Path, registry, busybox_tar: Path, capsys) -> None:
    seed = Store.open(tmp_path / "seed")
    import_rootfs(seed, busybox_tar, "busybox:latest")
    base_ref = f"{registry.host}/base/busybox:1"
    seed.tag(base_ref, seed.load_image("busybox").manifest_digest)
    pushed_base = push(seed, base_ref)  # the layer made here goes out gzip-compressed: its own digest

    fresh = tmp_path / "fresh"
    context = _context(tmp_path, f"FROM {base_ref}\nRUN echo built-on-pulled-base > /proof\nCMD [\"cat\", \"/proof\"]\n")
    app_ref = f"{registry.host}/apps/proof:1"
    metadata = tmp_path / "metadata.json"
    code = cli_main(["--root", str(fresh), "build", "--progress", "quiet", "--push", "-t", app_ref,
                     "--metadata-file", str(metadata), str(context)])
    assert code == 0, capsys.readouterr().err
    built = Store.open(fresh).load_image(app_ref)
    assert Store.open(fresh).load_image(base_ref).manifest_digest == pushed_base
    pushed_app = json.loads(metadata.read_text())["pushed"][app_ref]
    # The pulled base's blob went out as it came in; the RUN layer went out gzip-compressed.
    shipped_layers = json.loads(RegistryClient(registry.host).get_manifest("apps/proof", "1").data)["layers"]
    assert shipped_layers[0] == built.manifest["layers"][0]
    assert shipped_layers[1]["mediaType"].endswith("gzip") and built.manifest["layers"][1]["mediaType"].endswith(".tar")

    other = Store.open(tmp_path / "other")
    pulled = pull(other, app_ref)
    assert pulled.manifest_digest == pushed_app
    assert pulled.config_digest == built.config_digest, "the same image, whatever its layers' compression"
    inspected = json.loads(subprocess.run(
        [shutil.which("skopeo"), "inspect", "--tls-verify=false", f"docker://{app_ref}"],
        check=True, capture_output=True, text=True).stdout)
    assert inspected["Digest"] == pushed_app

    code = cli_main(["--root", str(fresh), "build", "--progress", "quiet",
                     "--output", f"type=registry,name={registry.host}/apps/proof:2", str(context)])
    assert code == 0, capsys.readouterr().err
    # The compressed layer was kept from the first push: the same bytes, the same digest again.
    assert pull(Store.open(tmp_path / "third"), f"{registry.host}/apps/proof:2").manifest_digest == pushed_app


def test_pull_flag_takes_a_newer_base(tmp_path: Path, registry, busybox_tar: Path) -> None:
    seed = Store.open(tmp_path / "seed")
    import_rootfs(seed, busybox_tar, "busybox:latest")
    base_ref = f"{registry.host}/base/moving:latest"
    first = builder.build(_context(tmp_path, "FROM busybox\nRUN echo v1 > /version\n"), root=seed.root, tags=[base_ref])
    push(seed, base_ref)

    user_store = tmp_path / "user"
    context = tmp_path / "user-ctx"
    context.mkdir()
    (context / "Buildfile").write_text(f"FROM {base_ref}\nRUN cat /version > /seen\n")
    out1 = tmp_path / "out1"
    builder.build(context, root=user_store, outputs=[f"type=local,dest={out1}"])
    assert (out1 / "seen").read_text() == "v1\n"

    second = builder.build(_context(tmp_path, "FROM busybox\nRUN echo v2 > /version\n"), root=seed.root, tags=[base_ref])
    assert second.manifest_digest != first.manifest_digest
    push(seed, base_ref)

    out2 = tmp_path / "out2"
    builder.build(context, root=user_store, outputs=[f"type=local,dest={out2}"])
    assert (out2 / "seen").read_text() == "v1\n", "without --pull the stored base is used"
    out3 = tmp_path / "out3"
    builder.build(context, root=user_store, pull=True, outputs=[f"type=local,dest={out3}"])
    assert (out3 / "seen").read_text() == "v2\n"
