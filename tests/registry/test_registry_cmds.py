"""`pull` and `push` commands through their argparse handlers, and --insecure-registry."""
from __future__ import annotations

import argparse
import json
import sys

import pytest
from registry_helpers import FaultProxy, make_image, push_raw

from builder.commands import registry_cmds
from builder.errors import BuildError
from builder.image.store import Store
from builder.registry import RegistryClient


@pytest.fixture
def run(tmp_path, capsys):
    root = tmp_path / "store"

    def run(*argv: str):
        parser = argparse.ArgumentParser(prog="builder")
        parser.add_argument("--root", default=None)
        registry_cmds.register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["--root", str(root), *argv])
        capsys.readouterr()
        try:
            code = args.handler(args)
        except BuildError as error:
            print(error.render(), file=sys.stderr)
            code = 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    run.root = root
    return run


def test_pull_and_push_commands(registry, run):
    image = make_image("cli")
    push_raw(RegistryClient(registry.host), "test/cli", image, "v1")
    code, out, err = run("pull", f"{registry.host}/test/cli:v1")
    assert code == 0, err
    assert out.splitlines() == [
        f"Digest: {image.manifest_digest}",
        f"Status: Downloaded newer image for {registry.host}/test/cli:v1",
        f"{registry.host}/test/cli:v1",
    ]
    code, out, _ = run("pull", f"{registry.host}/test/cli:v1")
    assert f"Status: Image is up to date for {registry.host}/test/cli:v1" in out

    code, out, err = run("push", f"{registry.host}/test/cli:v1", f"{registry.host}/test/cli-copy")
    assert code == 0, err
    assert out.splitlines() == [
        f"The push refers to repository [{registry.host}/test/cli-copy]",
        f"latest: digest: {image.manifest_digest} size: {len(image.manifest)}",
    ]
    assert RegistryClient(registry.host).get_manifest("test/cli-copy", "latest").data == image.manifest

    code, out, err = run("pull", f"{registry.host}/test/cli-copy")
    assert out.splitlines()[0] == "Using default tag: latest"
    assert Store.open(run.root).resolve(f"{registry.host}/test/cli-copy:latest") == image.manifest_digest


def test_command_errors(registry, run):
    code, _, err = run("pull", f"{registry.host}/test/absent:v1")
    assert code == 1
    assert err.splitlines()[-1].startswith(f"error: manifest {registry.host}/test/absent:v1 not found")
    code, _, err = run("push", f"{registry.host}/test/not-local:v1")
    assert code == 1
    assert "not found in the local store" in err
    code, _, err = run("pull", "Bad/Name")
    assert code == 1 and "lowercase" in err


def test_insecure_registry_flag(registry, run):
    """127.0.0.2 is not in the plain-HTTP list: HTTPS is tried unless --insecure-registry names it."""
    image = make_image("insecure")
    push_raw(RegistryClient(registry.host), "test/insecure", image, "v1")
    proxy = FaultProxy(registry.port, bind="127.0.0.2")
    try:
        code, _, err = run("pull", f"{proxy.host}/test/insecure:v1")
        assert code == 1
        assert "TLS error" in err and f"--insecure-registry {proxy.host}" in err
        code, out, err = run("pull", "--insecure-registry", proxy.host, f"{proxy.host}/test/insecure:v1")
        assert code == 0, err
        assert f"Digest: {image.manifest_digest}" in out
    finally:
        proxy.stop()


def test_pull_and_push_show_byte_progress_unless_quiet(registry, run):
    image = make_image("progress", [({"big": bytes(range(256)) * 4096}, "gzip")])
    push_raw(RegistryClient(registry.host), "test/progress", image, "v1")
    ref = f"{registry.host}/test/progress:v1"
    code, _, err = run("pull", "--progress", "plain", ref)
    assert code == 0
    lines = err.splitlines()
    assert lines[0] == f"#1 pulling {ref}"
    assert any(line.startswith("#1 sha256:") and line.endswith("done") for line in lines), err
    code, _, err = run("push", "-q", ref, f"{registry.host}/test/progress-copy:v1")
    assert (code, err) == (0, "")
    code, _, err = run("push", "--progress", "rawjson", ref, f"{registry.host}/test/progress-copy:v2")
    kinds = [json.loads(line)["kind"] for line in err.splitlines()]
    assert kinds[0] == "push-start" and kinds[-1] == "push-done"
