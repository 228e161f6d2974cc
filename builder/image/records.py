"""Image records and tags: which manifests are images of the store, what names point at them."""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from builder.errors import ImageNotFound, StoreError
from builder.image import oci
from builder.image.blobfiles import DiffIdMismatch, check_digest
from builder.image.content import RECORD_LAYER_SQL, BlobStore
from builder.image.index import StoreIndex
from builder.image.lazy import LazyLayers
from builder.image.reference import InvalidReference, normalize_tag, parse_reference
from builder.image.snapshots import SnapshotStore

_HEX_PREFIX = re.compile(r"^(?:sha256:)?[0-9a-f]{1,64}$")


@dataclass
class ImageRecord:
    manifest_digest: str
    manifest: dict
    config_digest: str
    config: dict
    tags: list[str] = field(default_factory=list)

    @property
    def image_id(self) -> str:
        """Docker's IMAGE ID: the config digest."""
        return self.config_digest

    @property
    def short_id(self) -> str:
        return self.config_digest.removeprefix("sha256:")[:12]


class ImageRecords:
    def __init__(self, index: StoreIndex, blobs: BlobStore, snapshots: SnapshotStore,
                 lazy: LazyLayers | None = None) -> None:
        self.index = index
        self.blobs = blobs
        self.snapshots = snapshots
        self.lazy = lazy

    def _made_here(self, digest: str) -> bool:
        """A layer the builder wrote from a dir (digest = diff_id), whose snapshot is its content."""
        info = self.blobs.diff(digest)
        return info is not None and info.from_dir and self.snapshots.has_snapshot(digest)

    # --- images ---

    def save_image(self, manifest: dict, config: dict) -> ImageRecord:
        """Store a manifest and config (both serialised canonically) and record the image."""
        config_bytes = oci.canonical_json(config)
        config_digest = oci.sha256_digest(config_bytes)
        declared = (manifest.get("config") or {}).get("digest")
        if declared != config_digest:
            raise StoreError(
                f"the manifest's config descriptor ({declared}) does not match the config ({config_digest})",
                hint="build the manifest with builder.image.oci.make_manifest_for_config(config, layers)")
        return self.save_image_bytes(oci.canonical_json(manifest), config_bytes)

    def save_image_bytes(self, manifest_bytes: bytes, config_bytes: bytes) -> ImageRecord:
        """Store a manifest and config exactly as given (digests preserved, e.g. pulled images)."""
        try:
            manifest = json.loads(manifest_bytes)
            config = json.loads(config_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"image manifest or config is not valid JSON: {exc}") from exc
        config_digest = oci.sha256_digest(config_bytes)
        declared = (manifest.get("config") or {}).get("digest")
        if declared != config_digest:
            raise StoreError(f"the manifest's config descriptor ({declared}) does not match the config ({config_digest})")
        layers = oci.manifest_layers(manifest)
        made_here = {layer.digest for layer in layers if not self.blobs.has_blob(layer.digest)
                     and self._made_here(layer.digest)}
        # A lazy layer (lazy.py) stands for its claimed diff_id until its bytes come, and are checked.
        lazy = {layer.digest: found for layer in layers if layer.digest not in made_here
                and self.lazy is not None and (found := self.lazy.get(layer.digest)) is not None
                and not self.blobs.has_blob(layer.digest)}
        missing = [layer.digest for layer in layers if layer.digest not in made_here
                   and layer.digest not in lazy and not self.blobs.has_blob(layer.digest)]
        if missing:
            raise StoreError(f"image layers missing from the store: {', '.join(missing)}",
                             hint="put every layer blob before saving the image")
        diff_ids = oci.config_diff_ids(config)
        if len(diff_ids) != len(layers):
            raise StoreError(f"the config lists {len(diff_ids)} diff_ids but the manifest {len(layers)} layers")
        for layer, claimed in zip(layers, diff_ids, strict=True):
            # A layer made here was hashed from its dir when it was made: its digest is its diff_id.
            if layer.digest in made_here:
                actual = layer.digest
            elif layer.digest in lazy:
                actual = lazy[layer.digest].diff_id
            else:
                actual = self.blobs.layer_diff_id(layer.digest)
            if actual != claimed:
                raise DiffIdMismatch(layer.digest, claimed, actual)
        self.blobs.put_blob(config_bytes, config_digest)
        # With its digest named, a manifest the store already holds (a no-op rebuild) is not
        # written, synced and thrown away again.
        manifest_digest, _ = self.blobs.put_blob(manifest_bytes, oci.sha256_digest(manifest_bytes))
        with self.index.tx() as tx:
            for layer, diff_id in zip(layers, diff_ids, strict=True):  # each pair hashed above
                if layer.digest in made_here or layer.digest in lazy:
                    continue
                tx.execute(RECORD_LAYER_SQL, (layer.digest, diff_id, layer.media_type, layer.size))
                size = self.blobs.learnt_size(layer.digest)
                if size is not None:
                    tx.execute("INSERT OR IGNORE INTO diffs(diff_id, size, from_dir, epoch) VALUES (?,?,0,NULL)",
                               (diff_id, size))
            tx.execute("INSERT OR IGNORE INTO images(manifest_digest, config_digest, created) VALUES (?,?,?)",
                       (manifest_digest, config_digest, time.time()))
        return ImageRecord(manifest_digest, manifest, config_digest, config, self._tags_of(manifest_digest))

    def _tags_of(self, manifest_digest: str) -> list[str]:
        rows = self.index.db().execute("SELECT name FROM tags WHERE manifest_digest=? ORDER BY name",
                                       (manifest_digest,)).fetchall()
        return [r[0] for r in rows]

    def record(self, manifest_digest: str) -> ImageRecord:
        row = self.index.db().execute("SELECT config_digest FROM images WHERE manifest_digest=?",
                                      (manifest_digest,)).fetchone()
        if row is None:
            raise ImageNotFound(f"image {manifest_digest} is not in the local store")
        manifest = self.blobs.read_json(manifest_digest)
        config = self.blobs.read_json(row[0])
        return ImageRecord(manifest_digest, manifest, row[0], config, self._tags_of(manifest_digest))

    def resolve(self, ref: str) -> str:
        """The manifest digest `ref` names: a tag, `name@digest`, a manifest digest, or an image ID."""
        text = ref.strip()
        db = self.index.db()
        if oci.is_digest(text):
            if db.execute("SELECT 1 FROM images WHERE manifest_digest=?", (text,)).fetchone():
                return text
            by_config = self._manifests_for_config(text)
            if by_config:
                return by_config[0]
            raise ImageNotFound(f"no image with digest {text} in the local store",
                                hint="a digest names a manifest or an image ID (config digest)")
        if "@" in text:
            try:
                parsed = parse_reference(text)
            except InvalidReference:
                parsed = None
            if parsed is not None and parsed.digest and oci.is_digest(parsed.digest):
                return self.resolve(parsed.digest)
        tag_error: InvalidReference | None = None
        try:
            name = normalize_tag(text)
        except InvalidReference as exc:
            tag_error, name = exc, None
        if name is not None:
            row = db.execute("SELECT manifest_digest FROM tags WHERE name=?", (name,)).fetchone()
            if row:
                return row[0]
        if _HEX_PREFIX.match(text):
            prefix = text if text.startswith("sha256:") else "sha256:" + text
            configs = sorted({r[0] for r in db.execute(
                "SELECT config_digest FROM images WHERE substr(config_digest, 1, ?) = ?",
                (len(prefix), prefix))})
            if len(configs) == 1:
                return self._manifests_for_config(configs[0])[0]
            if len(configs) > 1:
                raise ImageNotFound(f"image ID prefix {text!r} is ambiguous ({len(configs)} images match)",
                                    hint="give more characters of the image ID")
        if tag_error is not None and not _HEX_PREFIX.match(text):
            raise ImageNotFound(f"{text!r} is not a valid image reference: {tag_error.message}",
                                hint=tag_error.hint)
        known = [t for t, _ in self.tags()][:5]
        hint = "known tags: " + ", ".join(known) if known else "the local store has no tagged images; build or load one"
        raise ImageNotFound(f"image {text!r} not found in the local store", hint=hint)

    def _manifests_for_config(self, config_digest: str) -> list[str]:
        rows = self.index.db().execute(
            "SELECT i.manifest_digest FROM images i LEFT JOIN tags t ON t.manifest_digest = i.manifest_digest "
            "WHERE i.config_digest=? GROUP BY i.manifest_digest ORDER BY COUNT(t.name) DESC, i.created DESC",
            (config_digest,)).fetchall()
        return [r[0] for r in rows]

    def load_image(self, ref: str) -> ImageRecord:
        return self.record(self.resolve(ref))

    def images(self) -> list[ImageRecord]:
        rows = self.index.db().execute("SELECT manifest_digest FROM images ORDER BY created, manifest_digest").fetchall()
        return [self.record(r[0]) for r in rows]

    # --- tags ---

    def tag(self, name: str, manifest_digest: str) -> str:
        """Point tag `name` (normalised, `name` -> `name:latest`) at an image; returns the tag."""
        tag_name = normalize_tag(name)
        check_digest(manifest_digest)
        with self.index.tx() as tx:
            if not tx.execute("SELECT 1 FROM images WHERE manifest_digest=?", (manifest_digest,)).fetchone():
                raise ImageNotFound(f"cannot tag {tag_name}: image {manifest_digest} is not in the local store")
            tx.execute("INSERT INTO tags(name, manifest_digest, updated) VALUES (?,?,?) "
                       "ON CONFLICT(name) DO UPDATE SET manifest_digest=excluded.manifest_digest, "
                       "updated=excluded.updated WHERE tags.manifest_digest IS NOT excluded.manifest_digest",
                       (tag_name, manifest_digest, time.time()))
        return tag_name

    def untag(self, name: str) -> bool:
        tag_name = normalize_tag(name)
        with self.index.tx() as tx:
            return tx.execute("DELETE FROM tags WHERE name=?", (tag_name,)).rowcount > 0

    def tags(self) -> list[tuple[str, str]]:
        return [(n, d) for n, d in self.index.db().execute("SELECT name, manifest_digest FROM tags ORDER BY name")]

    def delete_image(self, ref: str, *, force: bool = False) -> list[str]:
        """Like `docker rmi`: a tag is removed; the image goes when no tag is left. Returns what was done."""
        done: list[str] = []
        manifest_digest = self.resolve(ref)
        by_tag: str | None = None
        try:
            candidate = normalize_tag(ref)
            if any(n == candidate for n, _ in self.tags()):
                by_tag = candidate
        except InvalidReference:
            pass
        with self.index.tx() as tx:
            if by_tag is not None:
                tx.execute("DELETE FROM tags WHERE name=?", (by_tag,))
                done.append(f"Untagged: {by_tag}")
            remaining = [r[0] for r in tx.execute("SELECT name FROM tags WHERE manifest_digest=?",
                                                 (manifest_digest,))]
            if remaining and by_tag is None and not force:
                raise StoreError(f"image {manifest_digest} is tagged as {', '.join(remaining)}",
                                 hint="remove it by tag, or force the removal of all its tags")
            if remaining and by_tag is None:
                tx.execute("DELETE FROM tags WHERE manifest_digest=?", (manifest_digest,))
                done.extend(f"Untagged: {n}" for n in remaining)
                remaining = []
            if not remaining:
                tx.execute("DELETE FROM images WHERE manifest_digest=?", (manifest_digest,))
                done.append(f"Deleted: {manifest_digest}")
        return done
