"""Images made by hand in a store, for the image command tests."""
from __future__ import annotations

import gzip
import io
import json
import tarfile

from builder.image import oci
from builder.image.store import Store


def layer_blob(files: dict[str, bytes]) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = 1577836800
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0), oci.sha256_digest(raw.getvalue())


def add_image(store: Store, label: str, *, tags=(), created="2020-01-01T00:00:00Z", history=None) -> str:
    """A two-layer image whose history also has an empty-layer step; returns its manifest digest."""
    layers = []
    diff_ids = []
    for index in range(2):
        blob, diff_id = layer_blob({f"{label}/{index}": f"{label}-{index}".encode() * (index * 500 + 1)})
        digest, size = store.put_blob(blob)
        layers.append({"mediaType": oci.OCI_LAYER_GZIP, "digest": digest, "size": size})
        diff_ids.append(diff_id)
    history = history or [
        {"created": created, "created_by": "/bin/sh -c #(nop) ADD file:0123456789abcdef in / "},
        {"created": created, "created_by": "/bin/sh -c #(nop)  ENV PATH=/usr/bin", "empty_layer": True},
        {"created": created, "created_by": "RUN /bin/sh -c echo " + "a-very-long-command " * 5,
         "comment": "buildkit.dockerfile.v0"},
    ]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"], "Labels": {"label": label}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    config_bytes = oci.canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": oci.OCI_CONFIG, "digest": oci.sha256_digest(config_bytes), "size": len(config_bytes)},
        "layers": layers,
    }
    record = store.save_image_bytes(json.dumps(manifest).encode(), config_bytes)
    for tag in tags:
        store.tag(tag, record.manifest_digest)
    return record.manifest_digest
