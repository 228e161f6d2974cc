"""Issue 10, item 1 (the sandbox's half): a bind mount's source is never resolved on the host.

A RUN --mount's staged source that is a symlink (e.g. `RUN ln -s / /r` in the source stage)
must not be followed by the host when it is bound: the sandbox refuses it, whatever it points
to, and the host is untouched.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.errors import SandboxError
from builder.sandbox import Bind
from security.sandbox_support import needs_root, run_in_sandbox

pytestmark = [needs_root]

SNOOP = "cat /mnt/h/marker; echo pwned > /mnt/h/written; echo done"


def host_dir(tmp_path: Path) -> Path:
    secret_place = tmp_path / "host-private"
    secret_place.mkdir()
    (secret_place / "marker").write_text("host-only\n")
    return secret_place


def assert_host_untouched(place: Path) -> None:
    assert sorted(os.listdir(place)) == ["marker"]
    assert (place / "marker").read_text() == "host-only\n"


@pytest.mark.parametrize("kind", ["overlay", "copy"])
def test_bind_source_that_is_a_symlink_to_a_host_dir_is_refused(busybox_rootfs, tmp_path, kind):
    place = host_dir(tmp_path)
    staged = tmp_path / "staged"
    staged.mkdir()
    os.symlink(place, staged / "m")  # what staging a `/r -> /`-style source leaves behind
    with pytest.raises(SandboxError, match="symlink"):
        run_in_sandbox([busybox_rootfs], tmp_path / "w", ["/bin/sh", "-c", SNOOP], kind,
                       extra_binds=[Bind(staged / "m", "/mnt/h", readonly=False)])
    assert_host_untouched(place)


def test_bind_source_with_a_symlink_on_its_way_is_refused(busybox_rootfs, tmp_path):
    place = host_dir(tmp_path)
    (place / "sub").mkdir()
    (place / "sub" / "marker").write_text("host-only\n")
    link = tmp_path / "link"
    os.symlink(place, link)
    with pytest.raises(SandboxError, match="symlink"):
        run_in_sandbox([busybox_rootfs], tmp_path / "w", ["/bin/sh", "-c", SNOOP],
                       extra_binds=[Bind(link / "sub", "/mnt/h", readonly=False)])
    assert sorted(os.listdir(place / "sub")) == ["marker"]


def test_bind_file_source_that_is_a_symlink_to_a_host_file_is_refused(busybox_rootfs, tmp_path):
    place = host_dir(tmp_path)
    link = tmp_path / "secret-link"
    os.symlink(place / "marker", link)
    with pytest.raises(SandboxError, match="symlink"):
        run_in_sandbox([busybox_rootfs], tmp_path / "w",
                       ["/bin/sh", "-c", "cat /run/x; echo pwned > /run/x"],
                       extra_binds=[Bind(link, "/run/x", readonly=False)])
    assert_host_untouched(place)


def test_bind_source_that_is_neither_file_nor_dir_is_refused(busybox_rootfs, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SandboxError, match="not a regular file or directory"):
        run_in_sandbox([busybox_rootfs], tmp_path / "w", ["/bin/sh", "-c", "ls -l /run/x"],
                       extra_binds=[Bind(fifo, "/run/x")])


def test_plain_bind_sources_still_work(busybox_rootfs, tmp_path):
    place = host_dir(tmp_path)
    status, out = run_in_sandbox([busybox_rootfs], tmp_path / "w",
                                 ["/bin/sh", "-c", "cat /mnt/h/marker; echo new > /mnt/h/written"],
                                 extra_binds=[Bind(place, "/mnt/h", readonly=False)])
    assert (status, out) == (0, "host-only\n")
    assert (place / "written").read_text() == "new\n"


def test_the_issues_exploit_build_leaves_the_host_untouched(tmp_path, busybox_store):
    """`RUN ln -s / /r` in stage a, then a rw bind of a's /r: whatever the source side makes of
    the link (resolved in the stage's root, or refused), the host is neither read nor written."""
    import builder
    from builder.errors import BuildError

    place = host_dir(tmp_path)
    context = tmp_path / "ctx"
    context.mkdir()
    text = (
        "FROM busybox AS a\n"
        "RUN ln -s / /r\n"
        "FROM busybox\n"
        "RUN --mount=type=bind,from=a,source=/r,target=/h,rw "
        f"sh -c 'cat /h{place}/marker > /seen 2>/dev/null; echo pwned > /h{place}/written 2>/dev/null; true'\n"
    )
    dest = tmp_path / "out"
    try:
        builder.build(context, buildfile_text=text, root=busybox_store.root, outputs=[f"type=local,dest={dest}"])
    except BuildError:
        pass  # refused: fine
    else:
        assert (dest / "seen").read_text() == ""
    assert_host_untouched(place)
