"""Config, history and layers as BuildKit makes them (issue 13, items 1, 5 and 7), checked
against what dockerd 20.10's BuildKit wrote for the same Buildfiles and the dockerfile2llb source.

Ownership of what WORKDIR makes needs root, so it is checked in tests/e2e/test_workdir.py."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from builder.errors import BuildError, PlanError
from builder.image.importer import import_rootfs
from builder.image.store import Store
from builder.solve.state import DEFAULT_PATH

from .fake import FakeExecutor, build

PATH = f"PATH={DEFAULT_PATH}"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


def _import(store: Store, tmp_path: Path, ref: str, env: list[str] | None = None,
            links: dict[str, str] | None = None, files: tuple[str, ...] = ()) -> None:
    """A one-layer image with a /tmp dir, the given files and symlinks, and the given Env."""
    root = tmp_path / f"rootfs-{ref.replace(':', '-')}"
    (root / "tmp").mkdir(parents=True)
    for name in files:
        (root / name).write_text("a file\n")
    for name, target in (links or {}).items():
        os.symlink(target, root / name)

    def edit(config: dict) -> None:
        if env is not None:
            config.setdefault("config", {})["Env"] = env

    import_rootfs(store, root, ref, edit_config=edit)


def _members(store: Store, built, index: int) -> dict[str, tarfile.TarInfo]:
    digest = built.config["rootfs"]["diff_ids"][index]
    with store.open_layer_tar(digest) as stream:
        data = stream.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        return {member.name.rstrip("/"): member for member in archive.getmembers()}


def _history(built) -> list[tuple[str, bool]]:
    return [(entry["created_by"], entry.get("empty_layer", False)) for entry in built.config["history"]]


# --- item 1: PATH and WorkingDir of the image a stage starts from ------------------------------


def test_a_scratch_image_has_the_default_path_and_workdir_root(store, tmp_path) -> None:
    built = build(store, "FROM scratch\nLABEL a=b\n", FakeExecutor(), tmp_path)
    assert built.config["config"] == {"Env": [PATH], "WorkingDir": "/", "Labels": {"a": "b"}}


def test_an_image_without_path_gets_it_after_its_own_env(store, tmp_path) -> None:
    _import(store, tmp_path, "no-env:1")
    _import(store, tmp_path, "env:1", env=["A=1", "B"])
    _import(store, tmp_path, "has-path:1", env=["PATH=/bin", "A=1"])
    for base, expected in (("no-env:1", [PATH]), ("env:1", ["A=1", "B", PATH]), ("has-path:1", ["PATH=/bin", "A=1"])):
        built = build(store, f"FROM {base}\nLABEL x=y\n", FakeExecutor(), tmp_path)
        assert built.config["config"]["Env"] == expected, base
        assert "WorkingDir" not in built.config["config"], "only scratch starts at /"


# --- item 7: ARG names are expanded --------------------------------------------------------------


def test_a_stage_arg_name_is_expanded_with_the_variables_in_scope(store, tmp_path) -> None:
    text = ("FROM scratch\nENV prefix=env\nARG name=foo\n"
            'ARG ${name}=v ${name}2=$name "q"=1\nARG ${prefix}_x=${name}\nRUN env foo /o\n')
    executor = FakeExecutor()
    built = build(store, text, executor, tmp_path)
    env = executor.runs[0].env
    assert (env["foo"], env["foo2"], env["q"], env["env_x"]) == ("v", "foo", "1", "foo")
    assert "${name}" not in env
    assert [entry for entry, _ in _history(built)][2:4] == ["ARG foo=v foo2=foo q=1", "ARG env_x=foo"]


def test_a_build_arg_reaches_an_arg_whose_name_is_a_variable(store, tmp_path) -> None:
    text = "FROM scratch\nARG name=foo\nARG ${name} ${name}d=default\nRUN env foo /o\n"
    executor = FakeExecutor()
    built = build(store, text, executor, tmp_path, build_args={"foo": "cli", "food": "cli-d"})
    assert (executor.runs[0].env["foo"], executor.runs[0].env["food"]) == ("cli", "cli-d")
    # A default the build arg replaces is never evaluated; the history shows the value in effect.
    assert _history(built)[1][0] == "ARG foo food=cli-d"


def test_a_global_arg_name_is_not_expanded(store, tmp_path) -> None:
    # BuildKit expands the names of stage ARGs only: the global one declares `${g}` itself.
    text = "ARG g=G\nARG ${g}=gv\nFROM scratch\nARG g\nARG ${g}\nRUN env G /o\n"
    executor = FakeExecutor()
    build(store, text, executor, tmp_path)
    assert "G" not in executor.runs[0].env and executor.runs[0].env["g"] == "G"


def test_an_arg_name_that_expands_to_nothing_is_an_error(store, tmp_path) -> None:
    with pytest.raises(PlanError, match="expands to an empty string") as caught:
        build(store, "FROM scratch\nARG ${nothing}=x\n", FakeExecutor(), tmp_path)
    assert caught.value.pos is not None and caught.value.pos.line == 2


def test_arg_history_follows_the_values_even_when_the_steps_are_cached(store, tmp_path) -> None:
    text = "FROM scratch\nARG A\nARG B=x$A\nLABEL l=1\n"
    executor = FakeExecutor()
    first = build(store, text, executor, tmp_path, build_args={"A": "1"})
    second = build(store, text, executor, tmp_path, build_args={"A": "2"})
    assert second.cached() == [True, True, True], "the value counts where it is used, not at the ARG"
    assert _history(first)[1][0] == "ARG B=x1" and _history(second)[1][0] == "ARG B=x2"


# --- item 5: WORKDIR makes its directory ---------------------------------------------------------


def test_workdir_makes_its_directory_in_a_layer_of_its_own(store, tmp_path) -> None:
    text = "FROM scratch\nWORKDIR /a/b/\nWORKDIR c/../d\nWORKDIR /\nWORKDIR /a/b\nWORKDIR //z//\n"
    built = build(store, text, FakeExecutor(), tmp_path)
    # The path is kept as written when absolute; a relative one is joined and cleaned.
    assert built.config["config"]["WorkingDir"] == "//z//"
    assert _history(built) == [
        ("WORKDIR /a/b/", False), ("WORKDIR /a/b/d", False), ("WORKDIR /", True),
        ("WORKDIR /a/b", False), ("WORKDIR //z//", False),
    ]
    first, second, existing, last = (_members(store, built, index) for index in range(4))
    assert sorted(first) == ["a", "a/b"] and all(m.isdir() and m.mode == 0o755 for m in first.values())
    assert sorted(second) == ["a", "a/b", "a/b/d"]
    assert existing == {}, "an existing directory gives an empty layer, still a layer"
    assert sorted(last) == ["z"]


def test_workdir_expands_variables_and_an_empty_value_keeps_the_current_one(store, tmp_path) -> None:
    text = 'FROM scratch\nENV D=/env/dir\nARG A=sub\nWORKDIR $D/${A}\nWORKDIR ${NOPE}\nWORKDIR "/quoted dir"\n'
    built = build(store, text, FakeExecutor(), tmp_path)
    assert [entry for entry, _ in _history(built)][2:] == [
        "WORKDIR /env/dir/sub", "WORKDIR /env/dir/sub", "WORKDIR /quoted dir"]
    assert sorted(_members(store, built, 0)) == ["env", "env/dir", "env/dir/sub"]
    assert _members(store, built, 1) == {}
    assert sorted(_members(store, built, 2)) == ["quoted dir"]


def test_workdir_follows_symlinks_inside_the_image(store, tmp_path) -> None:
    _import(store, tmp_path, "links:1", links={"abs": "/tmp", "rel": "tmp", "out": "../../tmp/deeper"})
    text = "FROM links:1\nWORKDIR /abs/one\nWORKDIR /rel/two\nWORKDIR /out\nWORKDIR /abs\n"
    built = build(store, text, FakeExecutor(), tmp_path)
    assert sorted(_members(store, built, 1)) == ["tmp", "tmp/one"]
    assert sorted(_members(store, built, 2)) == ["tmp", "tmp/two"]
    # `..` never climbs above the image's root: /out leads to /tmp/deeper.
    assert sorted(_members(store, built, 3)) == ["tmp", "tmp/deeper"]
    assert _members(store, built, 4) == {}
    assert built.config["config"]["WorkingDir"] == "/abs", "the config keeps the path as written"


@pytest.mark.parametrize("workdir", ["/file", "/file/sub", "/loop/sub"])
def test_a_file_or_a_link_loop_in_the_way_is_an_error(store, tmp_path, workdir) -> None:
    _import(store, tmp_path, "blocked:1", files=("file",), links={"loop": "/loop"})
    with pytest.raises(BuildError, match="is not a directory") as caught:
        build(store, f"FROM blocked:1\nWORKDIR {workdir}\n", FakeExecutor(), tmp_path)
    assert caught.value.pos is not None and caught.value.pos.line == 2


def test_expose_of_a_variable_is_checked_once_expanded(store, tmp_path) -> None:
    with pytest.raises(PlanError) as caught:
        build(store, "FROM scratch\nARG PORT=http\nEXPOSE $PORT\n", FakeExecutor(), tmp_path)
    assert "invalid port 'http'" in caught.value.message and caught.value.pos.line == 3
    built = build(store, "FROM scratch\nARG PORT=8080\nEXPOSE $PORT 9000-9001/UDP\n", FakeExecutor(), tmp_path)
    assert sorted(built.config["config"]["ExposedPorts"]) == ["8080/tcp", "9000/udp", "9001/udp"]
