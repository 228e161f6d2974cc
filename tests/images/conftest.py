"""A store with a few images, and a parser wired like the CLI (register + handler dispatch)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from builder.commands import images as image_commands
from builder.commands import registry_cmds
from builder.errors import BuildError
from builder.image.store import Store


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(tmp_path, capsys):
    """Run `builder --root ROOT ARGS...` through our register() functions, rendering errors like the CLI."""
    root = tmp_path / "store"

    def run(*argv: str, root_dir=None) -> CliResult:
        parser = argparse.ArgumentParser(prog="builder")
        parser.add_argument("--root", default=None)
        subparsers = parser.add_subparsers(dest="command")
        image_commands.register(subparsers)
        registry_cmds.register(subparsers)
        args = parser.parse_args(["--root", str(root_dir or root), *argv])
        capsys.readouterr()
        try:
            code = args.handler(args)
        except BuildError as error:
            print(error.render(), file=__import__("sys").stderr)
            code = 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    run.root = root
    return run


@pytest.fixture
def store(cli):
    return Store.open(cli.root)
