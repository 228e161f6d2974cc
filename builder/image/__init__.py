"""Images on local disk: OCI types, references, the content-addressed store, load/import.

Modules:
- `oci`: media types, `Descriptor`, `Platform`, `canonical_json` (the only way manifests and
  configs we create are serialised), `make_image_config`, `add_layer`, `add_empty_history`,
  `make_manifest`, `make_manifest_for_config`, `make_index`.
- `reference`: `parse_reference(ref) -> Reference(registry, repository, tag, digest)` with Docker's
  `docker.io/library/` rules; `normalize_tag(name)` (`app` -> `app:latest`), `familiar_name()`.
- `store`: `Store.open(root=None)` (argument, $BUILDER_ROOT, $XDG_DATA_HOME/builder,
  ~/.local/share/builder; a root 0700 of the user's own). Blobs: `blob_writer(expected_digest=None,
  layer=False)`, `put_blob`, `put_json`, `has_blob`, `blob_path`, `open_blob`, `read_blob`,
  `read_json`, `staging()` (verify many blobs, publish all at once). Layers:
  `put_layer_from_dir(dir, compression=, level=, source_date_epoch=, threads=, adopt=False)`,
  `layer_diff_id(blob)` (as hashed by the builder), `layer_blobs(diff_id)`, `snapshot_dir(diff_id,
  blob_digest=None)`, `snapshot_dirs(ref)`, `adopt_snapshot`, `has_snapshot`. Images:
  `save_image(manifest, config)`, `save_image_bytes(manifest_bytes, config_bytes)` (each claimed
  diff_id checked against the hashed one),
  `load_image(ref)`, `resolve(ref)`, `images()`, `tag`, `untag`, `tags`, `delete_image(ref,
  force=False)`. Step cache: `cache_get`, `cache_put`, `cache_delete`, `cache_prune(unused_for=)`,
  `cache_entries`. Upkeep: `gc(min_age=3600, dry_run=False)`, `fsck()`, `tempdir(prefix)`.
- `importer`: `load_archive(store, path, name=None)` (docker-archive, OCI archive or layout dir),
  `import_rootfs(store, source, ref=None, edit_config=None, message=None, ...)`.
"""
