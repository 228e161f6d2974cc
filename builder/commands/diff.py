"""`builder diff IMAGE_A IMAGE_B`: what differs between two images, for when builds do not match.

Compares the config fields, the layer lists, and, for layers at the same position that differ,
their entries: content, mode, owner, mtime, link target, xattrs.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from builder.image.store import ImageRecord, Store
from builder.layer import LayerEntry, iter_layer_entries

_ENTRY_FIELDS = ("type", "sha256", "size", "mode", "uid", "gid", "mtime", "linkname", "xattrs")


@dataclass
class LayerDifference:
    index: int
    digest_a: str | None
    digest_b: str | None
    diff_id_a: str | None
    diff_id_b: str | None
    files: list[dict[str, Any]] = field(default_factory=list)  # {path, field, a, b}


@dataclass
class ImageDifference:
    manifest_a: str
    manifest_b: str
    config: list[dict[str, Any]] = field(default_factory=list)  # {field, a, b}
    layers: list[LayerDifference] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.manifest_a == self.manifest_b


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        found: dict[str, Any] = {}
        for key, inner in value.items():
            found.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return found
    if isinstance(value, list) and prefix.startswith("history"):
        found = {}
        for index, inner in enumerate(value):
            found.update(_flatten(inner, f"{prefix}[{index}]"))
        return found
    return {prefix: value}


def _entries(store: Store, digest: str) -> dict[str, LayerEntry]:
    with store.open_layer_tar(digest) as tar:
        return {entry.name.rstrip("/"): entry for entry in iter_layer_entries(tar)}


def _compare_entries(a: dict[str, LayerEntry], b: dict[str, LayerEntry]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(set(a) | set(b)):
        left, right = a.get(path), b.get(path)
        if left is None or right is None:
            found.append({"path": path, "field": "presence", "a": left is not None, "b": right is not None})
            continue
        for name in _ENTRY_FIELDS:
            value_a, value_b = getattr(left, name), getattr(right, name)
            if value_a != value_b:
                if name == "mode":
                    value_a, value_b = oct(value_a), oct(value_b)
                if name == "xattrs":
                    value_a, value_b = repr(value_a), repr(value_b)
                found.append({"path": path, "field": name, "a": value_a, "b": value_b})
    return found


def diff_images(store_a: Store, ref_a: str, store_b: Store | None = None, ref_b: str = "") -> ImageDifference:
    store_b = store_b or store_a
    image_a: ImageRecord = store_a.load_image(ref_a)
    image_b: ImageRecord = store_b.load_image(ref_b)
    result = ImageDifference(image_a.manifest_digest, image_b.manifest_digest)
    flat_a, flat_b = _flatten(image_a.config), _flatten(image_b.config)
    for name in sorted(set(flat_a) | set(flat_b)):
        if name.startswith("rootfs.diff_ids"):
            continue
        if flat_a.get(name) != flat_b.get(name):
            result.config.append({"field": name, "a": flat_a.get(name), "b": flat_b.get(name)})
    layers_a = image_a.manifest.get("layers", [])
    layers_b = image_b.manifest.get("layers", [])
    diff_ids_a = image_a.config.get("rootfs", {}).get("diff_ids", [])
    diff_ids_b = image_b.config.get("rootfs", {}).get("diff_ids", [])
    for index in range(max(len(layers_a), len(layers_b))):
        digest_a = layers_a[index]["digest"] if index < len(layers_a) else None
        digest_b = layers_b[index]["digest"] if index < len(layers_b) else None
        if digest_a == digest_b:
            continue
        difference = LayerDifference(
            index, digest_a, digest_b,
            diff_ids_a[index] if index < len(diff_ids_a) else None,
            diff_ids_b[index] if index < len(diff_ids_b) else None,
        )
        if digest_a and digest_b and difference.diff_id_a != difference.diff_id_b:
            difference.files = _compare_entries(_entries(store_a, digest_a), _entries(store_b, digest_b))
        result.layers.append(difference)
    return result


def render(difference: ImageDifference) -> str:
    if difference.identical:
        return f"identical: {difference.manifest_a}\n"
    lines = [f"--- {difference.manifest_a}", f"+++ {difference.manifest_b}"]
    for item in difference.config:
        lines.append(f"config {item['field']}: {json.dumps(item['a'])} != {json.dumps(item['b'])}")
    for layer in difference.layers:
        if layer.diff_id_a == layer.diff_id_b:
            lines.append(f"layer {layer.index}: same content, different compression ({layer.digest_a} != {layer.digest_b})")
            continue
        lines.append(f"layer {layer.index}: {layer.diff_id_a} != {layer.diff_id_b}")
        for item in layer.files:
            lines.append(f"  {item['path']}: {item['field']} {item['a']} != {item['b']}")
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace) -> int:
    store = Store.open(args.root)
    difference = diff_images(store, args.image_a, store, args.image_b)
    if args.format == "json":
        print(json.dumps(asdict(difference), indent=2, default=str))
    else:
        print(render(difference), end="")
    return 0 if difference.identical else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("diff", help="show how two images differ (config, layers, files)")
    parser.add_argument("image_a")
    parser.add_argument("image_b")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.set_defaults(handler=_run)
