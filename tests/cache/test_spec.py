"""--cache-to / --cache-from specifications: BuildKit's syntax, every mistake refused up front."""
from __future__ import annotations

import pytest

import builder
from builder.cache.spec import parse_cache_from, parse_cache_to
from builder.errors import CacheError, InvalidArgument


def test_registry_export_with_its_options() -> None:
    spec = parse_cache_to("type=registry,ref=localhost:5000/app:cache,mode=max,compression=zstd,compression-level=5")
    assert (spec.type, spec.ref, spec.mode, spec.compression, spec.compression_level) == (
        "registry", "localhost:5000/app:cache", "max", "zstd", 5)
    assert spec.ignore_error and not spec.force_compression
    assert spec.label == "registry localhost:5000/app:cache"


def test_defaults_follow_buildkit() -> None:
    spec = parse_cache_to("type=local,dest=/tmp/c")
    assert (spec.mode, spec.tag, spec.path) == ("min", "latest", "/tmp/c")
    assert spec.compression is None, "the build's --compression, so the cache and the image share blobs"
    assert parse_cache_to("type=inline").type == "inline"


def test_a_reference_alone_means_a_registry_cache() -> None:
    assert parse_cache_from("registry.example/app:1").ref == "registry.example/app:1"
    assert parse_cache_from("registry.example/app:1").type == "registry"
    assert parse_cache_to("registry.example/app:cache").type == "registry"


def test_local_import_with_a_tag() -> None:
    spec = parse_cache_from("type=local,src=ci-cache,tag=main")
    assert (spec.path, spec.tag, spec.label) == ("ci-cache", "main", "local ci-cache (main)")


@pytest.mark.parametrize(("text", "export", "words"), [
    ("", True, "empty --cache-to"),
    ("type=gha", True, "unsupported cache type 'gha'"),
    ("type=inline", False, "--cache-from IMAGE"),
    ("type=registry", True, "needs ref="),
    ("type=registry,ref=Bad Name", False, "invalid cache reference"),
    ("type=registry,ref=host/app@sha256:" + "a" * 64, True, "under a tag, not a digest"),
    ("type=local", True, "needs dest=DIR"),
    ("type=local,dest=x", False, "unknown option 'dest'"),
    ("type=local,src=x", False, None),
    ("type=registry,ref=h/a:c,mode=all", True, "mode=min or mode=max"),
    ("type=inline,mode=max", True, "final image's steps only"),
    ("type=registry,ref=h/a:c,compression=lz4", True, "unsupported compression"),
    ("type=registry,ref=h/a:c,compression=gzip,compression-level=12", True, "out of range for gzip"),
    ("type=registry,ref=h/a:c,ignore-error=maybe", True, "ignore-error=true or ignore-error=false"),
    ("type=registry,ref=h/a:c,ref=h/b:c", True, "given twice"),
    ("type=registry,novalue", True, "invalid field"),
])
def test_mistakes_are_cache_errors_with_a_hint(text: str, export: bool, words: str | None) -> None:
    parse = parse_cache_to if export else parse_cache_from
    if words is None:
        parse(text)
        return
    with pytest.raises(CacheError) as caught:
        parse(text)
    assert words in caught.value.render()


def test_the_library_call_checks_its_cache_arguments(tmp_path) -> None:
    (tmp_path / "Buildfile").write_text("FROM scratch\n")
    with pytest.raises(InvalidArgument, match="cache_from must be a list of strings"):
        builder.build(tmp_path, root=tmp_path / "store", cache_from="registry.example/app:1")  # type: ignore[arg-type]
    with pytest.raises(CacheError, match="unsupported cache type"):
        builder.build(tmp_path, root=tmp_path / "store", cache_to=["type=s3"])
    assert not (tmp_path / "store").exists(), "a bad spec stops the build before it opens the store"
