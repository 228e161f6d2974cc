"""Issue 10 item 1: a RUN bind mount's source is resolved inside its own root (context, stage or
image), never by the host: a symlink to `/` or to a host path in a stage must not bind the host."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from e2e.helpers import layer_file_contents, write_context

import builder
from builder.errors import BuildError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A host dir no build may see or change."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "secret.txt").write_text("host secret\n")
    return victim


def _host_state(victim: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(victim.iterdir())}


def test_stage_link_to_host_dir_resolves_inside_the_stage(tmp_path: Path, busybox_store, victim: Path) -> None:
    context = write_context(tmp_path / "ctx", {})
    before = _host_state(victim)
    text = (
        "FROM busybox AS a\n"
        f"RUN ln -s {victim} /r\n"
        "FROM busybox\n"
        "RUN --mount=type=bind,from=a,source=/r,target=/h,rw cat /h/secret.txt > /leak; echo x > /h/planted\n"
    )
    with pytest.raises(BuildError) as caught:
        builder.build(context, buildfile_text=text, root=busybox_store.root)
    assert "not found" in caught.value.message
    assert _host_state(victim) == before


def test_stage_link_to_root_binds_the_stage_root_not_the_host(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {})
    marker = f"builder-mount-escape-{os.getpid()}"
    text = (
        "FROM busybox AS a\n"
        "RUN ln -s / /r && echo in-stage > /stage-only\n"
        "FROM busybox\n"
        f"RUN --mount=type=bind,from=a,source=/r,target=/h,rw cat /h/stage-only > /seen && echo x > /h/{marker}\n"
    )
    try:
        result = builder.build(context, buildfile_text=text, root=busybox_store.root)
        assert not Path("/" + marker).exists(), "the RUN wrote into the host's root"
        assert layer_file_contents(busybox_store, result.manifest["layers"][-1]["digest"])["seen"] == b"in-stage\n"
    finally:
        Path("/" + marker).unlink(missing_ok=True)


def test_link_through_the_path_resolves_inside_the_stage(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {})
    text = (
        "FROM busybox AS a\n"
        "RUN mkdir -p /data && echo stage-data > /data/f && ln -s / /r\n"
        "FROM busybox\n"
        "RUN --mount=type=bind,from=a,source=/r/data,target=/h cat /h/f > /seen\n"
    )
    result = builder.build(context, buildfile_text=text, root=busybox_store.root)
    assert layer_file_contents(busybox_store, result.manifest["layers"][-1]["digest"])["seen"] == b"stage-data\n"


def test_image_link_to_host_dir_is_not_followed(tmp_path: Path, busybox_store, victim: Path) -> None:
    context = write_context(tmp_path / "ctx", {})
    builder.build(context, buildfile_text=f"FROM busybox\nRUN ln -s {victim} /r\n", tags=["evil:1"], root=busybox_store.root)
    before = _host_state(victim)
    text = "FROM busybox\nRUN --mount=type=bind,from=evil:1,source=/r,target=/h,rw echo x > /h/planted\n"
    with pytest.raises(BuildError) as caught:
        builder.build(context, buildfile_text=text, root=busybox_store.root)
    assert "not found" in caught.value.message
    assert _host_state(victim) == before


def test_context_link_out_of_the_context_is_refused(tmp_path: Path, busybox_store, victim: Path) -> None:
    context = write_context(tmp_path / "ctx", {})
    (context / "out").symlink_to(victim)
    before = _host_state(victim)
    text = "FROM busybox\nRUN --mount=type=bind,source=out,target=/h,rw cat /h/secret.txt > /leak; echo x > /h/planted\n"
    with pytest.raises(BuildError) as caught:
        builder.build(context, buildfile_text=text, root=busybox_store.root)
    assert "outside the build context" in caught.value.message
    assert caught.value.pos is not None and caught.value.pos.line == 2
    assert _host_state(victim) == before


def test_context_link_inside_the_context_is_followed_and_keyed_on_its_target(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {"real/f": "one\n"})
    (context / "alias").symlink_to("real")
    text = "FROM busybox\nRUN --mount=type=bind,source=alias,target=/h cat /h/f > /seen\n"
    first = builder.build(context, buildfile_text=text, root=busybox_store.root)
    assert layer_file_contents(busybox_store, first.manifest["layers"][-1]["digest"])["seen"] == b"one\n"
    (context / "real/f").write_text("two\n")
    second = builder.build(context, buildfile_text=text, root=busybox_store.root)
    assert not second.steps[-1].cached, "the key must cover the link's target, not the link text"
    assert layer_file_contents(busybox_store, second.manifest["layers"][-1]["digest"])["seen"] == b"two\n"


def test_onbuild_trigger_mount_of_a_stage_link_stays_inside(tmp_path: Path, busybox_store, victim: Path) -> None:
    context = write_context(tmp_path / "ctx", {})
    base = (
        "FROM busybox\n"
        f"RUN ln -s {victim} /r\n"
        "ONBUILD RUN --mount=type=bind,source=/r,from=evil-base:1,target=/h,rw echo x > /h/planted\n"
    )
    builder.build(context, buildfile_text=base, tags=["evil-base:1"], root=busybox_store.root)
    before = _host_state(victim)
    with pytest.raises(BuildError):
        builder.build(context, buildfile_text="FROM evil-base:1\nRUN true\n", root=busybox_store.root)
    assert _host_state(victim) == before
