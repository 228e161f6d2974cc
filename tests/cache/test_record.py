"""The cache record: written canonically, read back exactly, and anything malformed dropped."""
from __future__ import annotations

import json

import pytest

from builder.cache.record import (
    ARTIFACT_TYPE,
    INLINE_ANNOTATION,
    RECORD_MEDIA_TYPE,
    CacheRecord,
    RecordEntry,
    RecordError,
    RecordLayer,
    is_record_manifest,
    parse_inline,
    parse_record,
)
from builder.image import oci


def _digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


LAYER = RecordLayer(_digest(1), _digest(2), 123, oci.OCI_LAYER_GZIP)
RECORD = CacheRecord({
    _digest(10): RecordEntry(_digest(11), LAYER, {"created": "1970-01-01T00:00:00Z", "created_by": "RUN x"}),
    _digest(20): RecordEntry(_digest(21), None, {"created": "1970-01-01T00:00:00Z", "created_by": "ENV A=1",
                                                 "empty_layer": True}),
})


def test_a_record_is_an_oci_artifact_that_lists_its_layer_blobs() -> None:
    config = RECORD.config_bytes()
    manifest = RECORD.manifest(config)
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["config"] == {"mediaType": RECORD_MEDIA_TYPE, "digest": oci.sha256_digest(config), "size": len(config)}
    assert manifest["layers"] == [{"mediaType": oci.OCI_LAYER_GZIP, "digest": _digest(1), "size": 123}]
    assert is_record_manifest(manifest)
    assert parse_record(manifest, config).steps == RECORD.steps
    assert RECORD.config_bytes() == CacheRecord(dict(reversed(RECORD.steps.items()))).config_bytes()


@pytest.mark.parametrize("damage", [
    lambda e: e.update(chain="not-a-digest"),
    lambda e: e["layer"].update(digest=_digest(99)),  # a blob the manifest does not list
    lambda e: e["layer"].update(size=124),
    lambda e: e["layer"].update(diff_id=None),
    lambda e: e["layer"].update(mediaType="application/x-evil"),
    lambda e: e["history"].update(empty_layer=True),  # says no layer, has one
    lambda e: e["history"].update(created_by=7),
    lambda e: e["history"].update(unexpected="x"),
])
def test_a_malformed_entry_is_dropped_and_the_others_kept(damage) -> None:
    config = json.loads(RECORD.config_bytes())
    damage(config["steps"][_digest(10)])
    steps = parse_record(RECORD.manifest(RECORD.config_bytes()), json.dumps(config).encode()).steps
    assert list(steps) == [_digest(20)]


@pytest.mark.parametrize("data", [b"\xff", b"[]", b'{"format": "buildkit"}', b'{"format": "builder.cache.v1"}'])
def test_an_unreadable_or_foreign_record_is_an_error(data: bytes) -> None:
    with pytest.raises(RecordError):
        parse_record(RECORD.manifest(data), data)


def test_an_inline_record_names_layers_by_diff_id_and_takes_the_image_s_blobs() -> None:
    annotation = RECORD.inline_annotation()
    assert _digest(1) not in annotation, "the blob is the image's: its digest depends on the push's compression"
    image_config = {"rootfs": {"type": "layers", "diff_ids": [_digest(5), _digest(2)]}}
    manifest = {"layers": [{"mediaType": oci.OCI_LAYER_GZIP, "digest": _digest(6), "size": 9},
                           {"mediaType": oci.OCI_LAYER_ZSTD, "digest": _digest(7), "size": 77}],
                "annotations": {INLINE_ANNOTATION: annotation}}
    steps = parse_inline(annotation, manifest, image_config).steps
    assert steps[_digest(10)].layer == RecordLayer(_digest(7), _digest(2), 77, oci.OCI_LAYER_ZSTD)
    assert steps[_digest(20)].layer is None
    other_image = {"rootfs": {"type": "layers", "diff_ids": [_digest(5), _digest(8)]}}
    assert list(parse_inline(annotation, manifest, other_image).steps) == [_digest(20)]
