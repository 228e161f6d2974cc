"""Issue 10, item 2 (devices): a RUN step may make device nodes (CAP_MKNOD stays, as in Docker)
but cannot open them; /dev holds only the harmless nodes; setuid programs of the image work.

Rootless (in a user namespace, see builder.userns) the kernel refuses the mknod itself, as it
does under rootless Docker: no node exists to open at all. tests/rootless runs these as an
ordinary user."""
from __future__ import annotations

import pytest

from builder.userns import in_user_namespace
from security.sandbox_support import needs_root, results, run_in_sandbox

pytestmark = [needs_root]


def made_but_unusable() -> list[str]:
    """What the probe's mknod and open of a device node report."""
    return ["mknod=EPERM", "open=ENOENT"] if in_user_namespace() else ["mknod=ok", "open=EACCES"]

ALLOWED_NODES = {"null", "zero", "full", "random", "urandom", "tty", "console", "ptmx"}


@pytest.mark.parametrize("kind", ["overlay", "copy"])
@pytest.mark.parametrize("where", ["/tmp", "/dev", "/scratch"])
def test_a_device_node_made_in_run_cannot_be_opened(busybox_rootfs, probe_layer, tmp_path, kind, where):
    from builder.sandbox import Tmpfs

    # c 1 11 is the host's kernel log (/dev/kmsg), c 1 3 /dev/null: neither may be reached.
    script = (f"/probe mknod {where}/kmsg 1 11; /probe mknod {where}/devnull 1 3; "
              f"[ -c {where}/devnull ] && echo x > {where}/devnull && echo write=ok")
    status, out = run_in_sandbox([busybox_rootfs, probe_layer], tmp_path / "w", ["/bin/sh", "-c", script],
                                 kind, extra_binds=[Tmpfs("/scratch")])
    lines = out.splitlines()
    assert lines[:2] == made_but_unusable(), out  # images do mknod; Docker allows it too
    assert lines[2:4] == made_but_unusable(), out
    assert "write=ok" not in out


def test_dev_holds_only_the_allowed_nodes(busybox_rootfs, probe_layer, tmp_path):
    script = ("/probe mknod /dev/extra 1 3 >/dev/null; "
              "find /dev -path /dev/pts -prune -o \\( -type c -o -type b \\) -print; echo --; "
              "head -c 3 /dev/zero | wc -c; echo hi > /dev/null && echo null=ok; "
              "/probe mknod /dev/extra2 1 3")
    status, out = run_in_sandbox([busybox_rootfs, probe_layer], tmp_path / "w", ["/bin/sh", "-c", script])
    nodes, _, rest = out.partition("--\n")
    names = {line.removeprefix("/dev/") for line in nodes.split()}
    assert names - {"extra"} <= ALLOWED_NODES, names
    assert {"null", "zero", "full", "random", "urandom"} <= names
    # The allowed nodes still work; one made next to them does not.
    assert rest.split("\n")[:2] == ["3", "null=ok"]
    assert results(rest)["open"] == made_but_unusable()[1].removeprefix("open=")


def test_setuid_programs_of_the_image_still_gain_their_uid(busybox_rootfs, probe_layer, tmp_path):
    status, out = run_in_sandbox([busybox_rootfs, probe_layer], tmp_path / "w",
                                 ["/bin/sh", "-c", "/probe euid; /probe-suid euid"], user="1000")
    # no nosuid on the rootfs and no no_new_privs: as in Docker by default.
    assert (status, out.split()) == (0, ["euid=1000", "euid=0"])
