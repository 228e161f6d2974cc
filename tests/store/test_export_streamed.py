"""Issue 11, export speed: an OCI tar export writes the largest layer it has to compress straight
into the tar as it is made (a placeholder header, patched once the digest is known), while the
store keeps the same bytes as the layer's blob. The tar must not depend on whether that happened:
its bytes are those of an export that copied every blob from the store."""
from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import tarfile
from pathlib import Path

import pytest
from storehelpers import build_image, make_tree, put_layer_blob

from builder.export import export_oci
from builder.export.tarout import StreamedMember, TarWriter
from builder.image import oci
from builder.image.store import Store
from builder.progress import Transfer


def layer_dirs(root: Path) -> list[Path]:
    """Two layers, the second the larger (several MiB, so its bytes go out in many writes)."""
    small = make_tree(root / "small", {"etc/app.conf": "port=80\n"})
    big = make_tree(root / "big", {"srv/readme": "data\n"})
    rng = random.Random(11)
    for index in range(3):
        (big / f"srv/part{index}.bin").write_bytes(rng.randbytes(2 << 20) + b"text " * 100_000)
    return [small, big]


def made_here(store: Store, root: Path):
    return build_image(store, layer_dirs(root), "app:1", compression=None)


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()}


@pytest.fixture
def copied_blobs(monkeypatch) -> list[str]:
    """The names of the members written by copying a file from the store."""
    names: list[str] = []
    real = TarWriter.add_path

    def add_path(self, name, path, size):
        names.append(name)
        return real(self, name, path, size)

    monkeypatch.setattr(TarWriter, "add_path", add_path)
    return names


def reference_export(tmp_path: Path, compression: str, capfdbinary) -> bytes:
    """The same image in a store of its own, exported to stdout: nothing is streamed there."""
    other = Store.open(tmp_path / "reference-store")
    record = made_here(other, tmp_path / "reference-layers")
    capfdbinary.readouterr()
    export_oci(other, record.manifest_digest, "-", tags=["app:1"], compression=compression)
    return capfdbinary.readouterr().out


@pytest.mark.parametrize("compression", ["zstd", "gzip", "uncompressed"])
def test_a_streamed_layer_gives_the_bytes_of_a_copied_one(store, tmp_path, copied_blobs, compression,
                                                          capfdbinary) -> None:
    record = made_here(store, tmp_path / "layers")
    first, second = tmp_path / "first.tar", tmp_path / "second.tar"
    export_oci(store, record.manifest_digest, first, tags=["app:1"], compression=compression)
    streamed_copies = list(copied_blobs)
    copied_blobs.clear()
    export_oci(store, record.manifest_digest, second, tags=["app:1"], compression=compression)
    assert first.read_bytes() == second.read_bytes() == reference_export(tmp_path, compression, capfdbinary)

    members = tar_members(first.read_bytes())
    index = json.loads(members["index.json"])
    manifest = json.loads(members[f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"])
    small, big = (f"blobs/sha256/{layer['digest'][7:]}" for layer in manifest["layers"])
    assert big not in streamed_copies, "the largest layer went into the tar as it was made"
    assert small in streamed_copies, "a smaller one was made beside it and copied in"
    assert big in copied_blobs, "the second export copies the blob the first one kept"
    assert list(members)[2:4] == [small, big], "layers in manifest order"
    for name, data in members.items():
        if name.startswith("blobs/sha256/") and data:
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
            assert store.read_blob("sha256:" + name.rsplit("/", 1)[1]) == data
    assert manifest["config"]["digest"] == record.config_digest
    assert [layer["mediaType"] for layer in manifest["layers"]] == [oci.oci_layer_media_type(compression)] * 2
    inspected = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{first}:1"], check=True,
                                          capture_output=True, text=True, timeout=60).stdout)
    assert inspected["Layers"] == [layer["digest"] for layer in manifest["layers"]]


def test_a_snapshot_changed_harmlessly_restarts_the_streamed_member(store, tmp_path, monkeypatch,
                                                                    capfdbinary) -> None:
    """The trusted write of the layer gives up (its dir's signature moved); what the tar got of it
    is cut away and the layer written again, hashed: the tar is still the reference's."""
    record = made_here(store, tmp_path / "layers")
    big_diff_id = record.config["rootfs"]["diff_ids"][1]
    snapshot = store.snapshot_dir(big_diff_id)
    part = snapshot / "srv/part2.bin"
    part.chmod(part.stat().st_mode & 0o7777)  # the same mode: the ctime moves, the tar does not
    restarts: list[int] = []
    real = StreamedMember.restart

    def restart(self) -> None:
        restarts.append(self.size)
        real(self)

    monkeypatch.setattr(StreamedMember, "restart", restart)
    out = tmp_path / "out.tar"
    export_oci(store, record.manifest_digest, out, tags=["app:1"], compression="zstd")
    assert len(restarts) == 1 and restarts[0] > 0, "bytes had gone into the tar before the change was seen"
    assert out.read_bytes() == reference_export(tmp_path, "zstd", capfdbinary)


def test_a_blob_whose_header_needs_more_than_a_block_is_copied_instead(store, tmp_path, monkeypatch,
                                                                       copied_blobs, capfdbinary) -> None:
    """A blob of 8 GiB or more needs a PAX size record: the streamed member is cut off and the
    blob, kept by the store meanwhile, written as a plain member. Simulated with a header that
    comes out two blocks long for the streamed blob."""
    record = made_here(store, tmp_path / "layers")
    real_header = TarWriter.header
    long_names: set[str] = set()

    def header(self, name: str, kind: str, size: int = 0) -> bytes:
        made = real_header(self, name, kind, size)
        return made + b"\0" * 512 if name in long_names else made

    real_finish = StreamedMember.finish

    def finish(self, name: str) -> bool:
        long_names.add(name)
        try:
            return real_finish(self, name)
        finally:
            long_names.discard(name)

    monkeypatch.setattr(TarWriter, "header", header)
    monkeypatch.setattr(StreamedMember, "finish", finish)
    out = tmp_path / "out.tar"
    export_oci(store, record.manifest_digest, out, tags=["app:1"], compression="zstd")
    assert len(copied_blobs) == 3, "both layers and the config were copied from the store"
    monkeypatch.undo()
    assert out.read_bytes() == reference_export(tmp_path, "zstd", capfdbinary)


def test_progress_ends_at_the_size_of_the_tar(store, tmp_path) -> None:
    record = made_here(store, tmp_path / "layers")
    events = []
    transfer = Transfer(events.append, step=1, id="archive", text="writing")
    out = tmp_path / "out.tar"
    export_oci(store, record.manifest_digest, out, compression="zstd", transfer=transfer)
    transfer.finish()
    assert events[-1].current == events[-1].total == out.stat().st_size


def export_image_of(store: Store, layer_digests: list, out: Path, compression: str) -> tuple[list[str], dict]:
    """An image of these layers (each as stored: a blob or a dir made here) exported as an OCI
    tar: its member names and the manifest it ships."""
    config = oci.make_image_config(platform=oci.Platform("linux", "amd64"), created="1970-01-01T00:00:00Z")
    layers = []
    for digests in layer_digests:
        layers.append(oci.Descriptor(digests.media_type, digests.digest, digests.size))
        oci.add_layer(config, digests.diff_id, "layer", created="1970-01-01T00:00:00Z")
    record = store.save_image(oci.make_manifest_for_config(config, layers), config)
    export_oci(store, record.manifest_digest, out, compression=compression)
    with tarfile.open(out) as tar:
        names = [member.name for member in tar.getmembers()]  # every member, a name twice included
    members = tar_members(out.read_bytes())
    index = json.loads(members["index.json"])
    return names, json.loads(members[f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"])


def test_a_layer_named_twice_goes_into_the_tar_once(store, tmp_path) -> None:
    """A base image's layer and a layer made here with the same content (one diff_id): the first
    ships as its blob, the second is compressed now; an image naming one made-here layer twice
    compresses it once. Every blob the manifest names is in the tar, each once."""
    tree = {"etc/same.conf": "same\n"}
    base = put_layer_blob(store, make_tree(tmp_path / "base", tree))
    again = store.put_layer_from_dir(make_tree(tmp_path / "again", tree), source_date_epoch=0)
    other = store.put_layer_from_dir(make_tree(tmp_path / "other", {"srv/x": "x\n"}), source_date_epoch=0)
    assert base.diff_id == again.diff_id
    names, manifest = export_image_of(store, [base, again, other, other], tmp_path / "out.tar", "zstd")
    assert len(names) == len(set(names))
    shipped = [f"blobs/sha256/{layer['digest'][7:]}" for layer in manifest["layers"]]
    assert shipped[2] == shipped[3] and len(set(shipped)) == 3
    assert names[2:5] == shipped[:3]
    assert manifest["layers"][0]["digest"] == base.digest, "the base layer's blob ships as it is"


def test_a_streamed_blob_equal_to_one_in_the_tar_is_not_written_twice(store, tmp_path) -> None:
    """A base image's gzip layer and the same content made here, exported in gzip: the layer made
    now compresses to the very blob the base ships, already in the tar, so the streamed member
    is cut off again (a tar with one name twice is refused by some readers)."""
    tree = {"etc/same.conf": "same\n" * 1000}
    base = put_layer_blob(store, make_tree(tmp_path / "base", tree))
    again = store.put_layer_from_dir(make_tree(tmp_path / "again", tree), source_date_epoch=0)
    out = tmp_path / "out.tar"
    names, manifest = export_image_of(store, [base, again], out, "gzip")
    assert hashlib.sha256(tar_members(out.read_bytes())[f"blobs/sha256/{base.digest[7:]}"]).hexdigest() == \
        base.digest[7:]
    assert [layer["digest"] for layer in manifest["layers"]] == [base.digest, base.digest]
    assert len(names) == len(set(names))


def test_an_output_failing_midway_is_an_error_that_keeps_nothing_half_made(store, tmp_path, monkeypatch,
                                                                           capfdbinary) -> None:
    """The export's copy of the streamed layer is written by a thread of its own: its failure (a
    full disk) still ends the export with the output's error, leaves no output file and no
    thread behind, and keeps no half-made blob: the next export gives the reference's bytes."""
    import threading

    from builder.errors import OutputError

    record = made_here(store, tmp_path / "layers")
    real = StreamedMember.write

    def write(self, data) -> int:
        if self.size >= 1 << 20:
            raise OutputError("cannot write the output: No space left on device")
        return real(self, data)

    monkeypatch.setattr(StreamedMember, "write", write)
    out = tmp_path / "out.tar"
    with pytest.raises(OutputError, match="No space left"):
        export_oci(store, record.manifest_digest, out, tags=["app:1"], compression="zstd")
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.tar")] == []
    assert [t.name for t in threading.enumerate() if t.name == "layer-writer"] == []
    big_diff_id = record.config["rootfs"]["diff_ids"][1]
    assert store.blobs.variant(big_diff_id, "zstd", 3) is None
    monkeypatch.setattr(StreamedMember, "write", real)
    export_oci(store, record.manifest_digest, out, tags=["app:1"], compression="zstd")
    assert out.read_bytes() == reference_export(tmp_path, "zstd", capfdbinary)
