"""Helpers for end-to-end build tests: read what a build produced."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

from builder.image.store import Store


def write_context(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def layer_members(store: Store, digest: str) -> dict[str, tarfile.TarInfo]:
    with store.open_layer_tar(digest) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
        return {member.name.rstrip("/"): member for member in archive}


def layer_file_contents(store: Store, digest: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    with store.open_layer_tar(digest) as stream:
        data = stream.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive.getmembers():
            if member.isfile():
                found[member.name] = archive.extractfile(member).read()
    return found


def oci_layout_manifest(layout: Path) -> dict:
    """The (first) image manifest an OCI layout directory's index names."""
    import json

    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    return json.loads((layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes())
