"""The overlay and the plain-copy snapshotter give byte-identical layers for the same RUN steps.

The corpus gathers the kinds of RUN the other build tests use (deletions, opaque dirs,
metadata-only changes, links, odd names, mounts, users, multi-stage) so that every RUN shape
the suite exercises is built both ways.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import write_context

import builder
from builder.image.importer import import_rootfs
from builder.image.store import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")

CORPUS = {
    "whiteouts-and-opaque": "RUN rm /etc/group && rm -rf /home && mkdir /home && echo x > /home/new\n",
    "metadata-only": "RUN chmod 0700 /root && chown 1000:1000 /tmp && touch -d @1600000000 /etc/passwd\n",
    "links": "RUN mkdir -p /a /b && echo data > /a/f && ln /a/f /b/hard && ln -s ../a/f /b/soft && ln -s /nowhere /dangling\n",
    "odd-names": "RUN mkdir '/with space' && touch '/with space/x y' \"/nl$(printf '\\nx')\" \"/bad$(printf '\\377')\"\n",
    "replace-types": "RUN rm -rf /var && echo file > /var && rm /bin/vi && mkdir /bin/vi\n",
    "fifo-and-modes": "RUN mkfifo /pipe && echo s > /setuid && chmod 4755 /setuid && chmod 1777 /root\n",
    "user-and-workdir": "USER app\nWORKDIR /home/app/work\nRUN echo mine > owned && id > id\n",
    "mounts": "RUN --mount=type=bind,source=.,target=/ctx --mount=type=tmpfs,target=/scratch cp /ctx/in.txt /copied && touch /scratch/gone\n",
    "multi-stage": "RUN echo one > /one\nFROM busybox\nCOPY --from=0 /one /two\nRUN cat /two > /three && rm /two\n",
    "many-steps": "".join(f"RUN echo {i} > /step{i % 3} && rm -f /step{(i + 1) % 3}\n" for i in range(6)),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_overlay_and_copy_snapshotters_agree(tmp_path: Path, busybox_tar: Path, name: str) -> None:
    context = write_context(tmp_path / "ctx", {"in.txt": "input\n"})
    text = "FROM busybox\n" + CORPUS[name]
    digests = {}
    for snapshotter in ("overlay", "copy"):
        store = Store.open(tmp_path / snapshotter)
        import_rootfs(store, busybox_tar, "busybox")
        result = builder.build(context, buildfile_text=text, root=store.root, snapshotter=snapshotter,
                               source_date_epoch=1700000000)
        digests[snapshotter] = [layer["digest"] for layer in result.manifest["layers"]]
    assert digests["overlay"] == digests["copy"]
