"""Typos a user makes: a misspelt stage in --from, a --build-arg no ARG uses."""
from __future__ import annotations

import pytest
from helpers import write_context

import builder
import builder.registry
from builder import EventKind, RegistryError


@pytest.fixture
def no_registry(monkeypatch):
    """Pulling fails at once, as with no network: tests never reach a real registry."""
    def refuse(store, name, **options):
        raise RegistryError(f"cannot reach the registry for {name} (tests stay offline)")

    monkeypatch.setattr(builder.registry, "pull", refuse)


def test_a_stage_name_typo_in_copy_from_suggests_the_stage(tmp_path, no_registry):
    context = write_context(tmp_path / "ctx", {"a": "a"})
    text = "FROM scratch AS builder\nCOPY a /a\nFROM scratch\nCOPY --from=buidler /a /a\n"
    with pytest.raises(RegistryError) as caught:
        builder.build(context, buildfile_text=text, root=tmp_path / "store")
    assert caught.value.pos is not None and caught.value.pos.line == 4
    assert caught.value.hint.endswith("did you mean the stage 'builder' (line 1)?")


def test_no_suggestion_when_nothing_is_close(tmp_path, no_registry):
    context = write_context(tmp_path / "ctx", {"a": "a"})
    text = "FROM scratch AS builder\nCOPY a /a\nFROM scratch\nCOPY --from=toolbox /a /a\n"
    with pytest.raises(RegistryError) as caught:
        builder.build(context, buildfile_text=text, root=tmp_path / "store")
    assert "did you mean" not in caught.value.hint


def test_an_unused_build_arg_is_warned_about(tmp_path):
    context = write_context(tmp_path / "ctx", {"a": "a"})
    messages: list[str] = []
    builder.build(context, buildfile_text="FROM scratch\nARG USED\nCOPY a /a\n", root=tmp_path / "store",
                  build_args={"USED": "1", "UNSUED": "2"},
                  on_event=lambda event: messages.append(event.text) if event.kind is EventKind.MESSAGE else None)
    assert messages == ["warning: one or more build args were not consumed: UNSUED"]


@pytest.mark.parametrize("source", ["https://example.invalid/repo.git#v1", "https://example.invalid/repo.git",
                                    "git@example.invalid:team/repo.git", "git://example.invalid/repo"])
def test_add_of_a_git_repository_is_refused_before_any_fetch(tmp_path, monkeypatch, source):
    import builder.solve.copy

    def no_fetch(*args, **kwargs):
        raise AssertionError("a git source must not be downloaded as a file")

    monkeypatch.setattr(builder.solve.copy, "download_url", no_fetch)  # copystep takes it from there
    context = write_context(tmp_path / "ctx", {"a": "a"})
    with pytest.raises(builder.BuildError) as caught:
        builder.build(context, buildfile_text=f"FROM scratch\nADD {source} /src\n", root=tmp_path / "store")
    assert caught.value.message == f'ADD from a git repository is not supported: "{source}"'
    assert caught.value.pos.line == 2
