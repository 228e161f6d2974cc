"""Docker-like image management: images, tag, rmi, inspect, history, save, load, import, image prune.

Each command opens the store at `args.root` and prints what `docker` would print, more or less.

"In use" marker: a build (or anything else) that must keep an image alive holds a shared flock on
`<store root>/locks/<manifest digest>` (see `hold_image`). `rmi` and `image prune` refuse to
delete an image whose lock file is flock'ed by someone else, unless forced. A lock dies with its
holder, so a killed build never leaves an image stuck "in use".
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence, TextIO

from builder.errors import BuildError, ImageNotFound, StoreError
from builder.image.inuse import image_in_use
from builder.image.reference import InvalidReference, normalize_tag, parse_reference, split_tag
from builder.image.store import ImageRecord, Store

NONE = "<none>"
CREATED_BY_WIDTH = 45


# --- formatting ---------------------------------------------------------------------------------------


def human_size(size: float) -> str:
    """Docker's HumanSizeWithPrecision(size, 3): decimal units, 3 significant digits (`7.8MB`, `0B`)."""
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    index = 0
    while size >= 1000 and index < len(units) - 1:
        size /= 1000.0
        index += 1
    return f"{size:.3g}{units[index]}"


def parse_created(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    # Go writes up to 9 fractional digits; Python's fromisoformat accepts at most 6.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def created_since(value: object, now: float | None = None) -> str:
    moment = parse_created(value)
    if moment is None:
        return "N/A"
    now = time.time() if now is None else now
    return human_duration(max(now - moment.timestamp(), 0)) + " ago"


def print_table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Columns padded like Go's tabwriter in docker (3 spaces between columns)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        print("   ".join(cells).rstrip(), file=out)


def layer_sizes(store: Store, record: ImageRecord) -> list[int]:
    """Each layer's uncompressed size, as Docker shows it (a pulled layer's blob size until the
    store has hashed its content once)."""
    layers = record.manifest.get("layers") or []
    diff_ids = list((record.config.get("rootfs") or {}).get("diff_ids") or [])
    sizes = []
    for index, layer in enumerate(layers):
        known = store.blobs.diff(diff_ids[index]) if index < len(diff_ids) else None
        sizes.append(known.size if known is not None else int(layer.get("size") or 0))
    return sizes


def image_size(store: Store, record: ImageRecord) -> int:
    """The image's size as Docker shows it: its layers, uncompressed."""
    return sum(layer_sizes(store, record))


def short_id(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def open_store(args: argparse.Namespace) -> Store:
    return Store.open(getattr(args, "root", None))


# --- images -------------------------------------------------------------------------------------------


def image_rows(store: Store) -> list[dict]:
    """One row per tag, and one `<none>` row per untagged image, newest first."""
    rows: list[dict[str, Any]] = []
    for record in store.images():
        created = record.config.get("created")
        names = [split_tag(tag) for tag in record.tags] or [(NONE, NONE)]
        for repository, tag in names:
            rows.append({
                "Repository": repository,
                "Tag": tag,
                "ID": short_id(record.config_digest),
                "Digest": record.manifest_digest,
                "CreatedAt": created or "",
                "CreatedSince": created_since(created),
                "Size": human_size(image_size(store, record)),
                "_sort": (parse_created(created) or datetime.fromtimestamp(0, timezone.utc)).timestamp(),
            })
    rows.sort(key=lambda r: (-r["_sort"], r["Repository"], r["Tag"]))
    for row in rows:
        del row["_sort"]
    return rows


def cmd_images(args: argparse.Namespace) -> int:
    store = open_store(args)
    rows = image_rows(store)
    if args.filter_repository:
        wanted = args.filter_repository
        try:
            wanted = parse_reference(wanted).familiar_name()
        except InvalidReference:
            pass
        rows = [r for r in rows if r["Repository"] == wanted]
    if args.quiet:
        seen: list[str] = []
        for row in rows:
            if row["ID"] not in seen:
                seen.append(row["ID"])
        for image_id in seen:
            print(image_id)
        return 0
    if args.format == "json":
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    if args.format not in (None, "table"):
        raise BuildError(f"unsupported --format {args.format!r}", hint="use --format json or table")
    table = [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]]
    table += [[r["Repository"], r["Tag"], r["ID"], r["CreatedSince"], r["Size"]] for r in rows]
    print_table(table, sys.stdout)
    return 0


# --- tag / rmi ----------------------------------------------------------------------------------------


def cmd_tag(args: argparse.Namespace) -> int:
    store = open_store(args)
    digest = store.resolve(args.source)
    try:
        store.tag(args.target, digest)
    except InvalidReference as exc:
        raise BuildError(f"invalid target name {args.target!r}: {exc.message}", hint=exc.hint) from None
    return 0


def _is_tag_of(store: Store, ref: str) -> str | None:
    try:
        name = normalize_tag(ref)
    except InvalidReference:
        return None
    return name if any(n == name for n, _ in store.tags()) else None


def remove_image(store: Store, ref: str, *, force: bool) -> list[str]:
    digest = store.resolve(ref)
    tag = _is_tag_of(store, ref)
    tags = [n for n, d in store.tags() if d == digest]
    would_delete = tag is None or tags == [tag]
    if tag is None and len(tags) > 1 and not force:
        raise StoreError(
            f"unable to delete {short_id(store.load_image(digest).config_digest)} (must be forced):"
            f" image is referenced in multiple repositories ({', '.join(tags)})",
            hint="remove it by tag, or use rmi -f to remove every tag",
        )
    if would_delete and not force and image_in_use(store, digest):
        raise StoreError(
            f"unable to remove {ref}: image {digest} is in use by a running build",
            hint="wait for the build to finish, or use rmi -f",
        )
    # By ID with a single tag, docker untags and deletes without -f; the store wants force for that.
    return store.delete_image(ref, force=force or (tag is None and len(tags) <= 1))


def cmd_rmi(args: argparse.Namespace) -> int:
    store = open_store(args)
    errors: list[BuildError] = []
    for ref in args.images:
        try:
            for line in remove_image(store, ref, force=args.force):
                print(line)
        except BuildError as exc:
            errors.append(exc)
    if not errors:
        return 0
    for error in errors[:-1]:
        print(error.render(), file=sys.stderr)
    raise errors[-1]


# --- inspect / history --------------------------------------------------------------------------------


def repo_digests(record: ImageRecord) -> list[str]:
    names = []
    for tag in record.tags:
        repository, _ = split_tag(tag)
        entry = f"{repository}@{record.manifest_digest}"
        if entry not in names:
            names.append(entry)
    return names


def inspect_record(store: Store, record: ImageRecord) -> dict:
    config = record.config
    return {
        "Id": record.config_digest,
        "RepoTags": list(record.tags),
        "RepoDigests": repo_digests(record),
        "Parent": "",
        "Comment": next((h.get("comment", "") for h in reversed(config.get("history") or []) if h.get("comment")), ""),
        "Created": config.get("created", ""),
        "DockerVersion": "",
        "Author": config.get("author", ""),
        "Config": config.get("config") or {},
        "Architecture": config.get("architecture", ""),
        **({"Variant": config["variant"]} if config.get("variant") else {}),
        "Os": config.get("os", ""),
        "Size": image_size(store, record),
        "RootFS": {"Type": (config.get("rootfs") or {}).get("type", "layers"),
                   "Layers": list((config.get("rootfs") or {}).get("diff_ids") or [])},
        "Descriptor": {
            "mediaType": record.manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json"),
            "digest": record.manifest_digest,
        },
        "Metadata": {"LastTagTime": ""},
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    store = open_store(args)
    found, missing = [], []
    for ref in args.images:
        try:
            found.append(inspect_record(store, store.load_image(ref)))
        except ImageNotFound as exc:
            missing.append(exc)
    print(json.dumps(found, indent=4))
    if missing:
        for error in missing[:-1]:
            print(error.render(), file=sys.stderr)
        raise missing[-1]
    return 0


def history_rows(store: Store, record: ImageRecord) -> list[dict]:
    """Newest first; a history entry with empty_layer has no layer and shows 0B."""
    sizes = layer_sizes(store, record)
    entries = list(record.config.get("history") or [])
    rows = []
    layer_index = 0
    for entry in entries:
        if entry.get("empty_layer"):
            size = 0
        else:
            size = sizes[layer_index] if layer_index < len(sizes) else 0
            layer_index += 1
        rows.append({
            "CreatedAt": entry.get("created", ""),
            "CreatedSince": created_since(entry.get("created")),
            "CreatedBy": entry.get("created_by", ""),
            "Size": human_size(size),
            "SizeBytes": size,
            "Comment": entry.get("comment", ""),
        })
    rows.reverse()
    for position, row in enumerate(rows):
        row["ID"] = record.config_digest if position == 0 else "<missing>"
    return rows


def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_history(args: argparse.Namespace) -> int:
    store = open_store(args)
    record = store.load_image(args.image)
    rows = history_rows(store, record)
    if args.format == "json":
        for row in rows:
            print(json.dumps(row, sort_keys=True, ensure_ascii=False))
        return 0
    table = [["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]]
    for row in rows:
        image = row["ID"] if args.no_trunc or row["ID"] == "<missing>" else short_id(row["ID"])
        created_by = row["CreatedBy"].replace("\t", " ").replace("\n", " ")
        if not args.no_trunc:
            created_by = _ellipsis(created_by, CREATED_BY_WIDTH)
        table.append([image, row["CreatedSince"], created_by, row["Size"], row["Comment"]])
    print_table(table, sys.stdout)
    return 0


# --- save / load / import -----------------------------------------------------------------------------


def cmd_save(args: argparse.Namespace) -> int:
    from builder.export.docker_archive import export_docker_archive

    store = open_store(args)
    dest = args.output or "-"
    if dest == "-" and sys.stdout.isatty():
        raise BuildError("cowardly refusing to save to a terminal", hint="use -o FILE or redirect stdout")
    order: list[str] = []
    tags_of: dict[str, list[str]] = {}
    for ref in args.images:
        digest = store.resolve(ref)
        if digest not in tags_of:
            order.append(digest)
            tags_of[digest] = []
        tag = _is_tag_of(store, ref)
        if tag and tag not in tags_of[digest]:
            tags_of[digest].append(tag)
    if dest == "-":
        sys.stdout.flush()
    export_docker_archive(store, [(digest, tags_of[digest]) for digest in order], dest)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from builder.image.importer import load_archive

    store = open_store(args)
    source = args.input
    if not Path(source).exists():
        raise BuildError(f"cannot load {source}: no such file or directory")
    for tag, digest in load_archive(store, source):
        if tag:
            print(f"Loaded image: {tag}")
        else:
            print(f"Loaded image ID: {store.load_image(digest).config_digest}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from builder.image.importer import import_rootfs
    from builder.solve.changes import apply_changes

    store = open_store(args)
    if args.reference:
        try:
            normalize_tag(args.reference)
        except InvalidReference as exc:
            raise BuildError(f"invalid image name {args.reference!r}: {exc.message}", hint=exc.hint) from None
    changes = args.change or ()
    record = import_rootfs(store, args.source, args.reference, message=args.message,
                           edit_config=lambda config: apply_changes(config, changes))
    print(record.config_digest)
    return 0


# --- image prune --------------------------------------------------------------------------------------


def cmd_image_prune(args: argparse.Namespace) -> int:
    store = open_store(args)
    lines: list[str] = []
    for record in store.images():
        if record.tags and not args.all:
            continue
        if image_in_use(store, record.manifest_digest):
            continue
        for tag in record.tags:
            store.untag(tag)
            lines.append(f"untagged: {tag}")
        lines.extend(line.replace("Deleted: ", "deleted: ") for line in store.delete_image(record.manifest_digest)
                     if line.startswith("Deleted"))
    reclaimed = store.gc().freed_bytes
    if lines:
        print("Deleted Images:")
        for line in lines:
            print(line)
        print()
    print(f"Total reclaimed space: {human_size(reclaimed)}")
    return 0


# --- registration -------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    images = subparsers.add_parser("images", help="list images in the store (SIZE: layers uncompressed, as Docker shows it)")
    images.add_argument("filter_repository", nargs="?", metavar="REPOSITORY", help="only this repository")
    images.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    images.add_argument("--format", choices=["table", "json"], default=None, help="table (default) or json lines")
    images.set_defaults(handler=cmd_images)

    tag = subparsers.add_parser("tag", help="name an image: tag SOURCE TARGET")
    tag.add_argument("source", metavar="SOURCE_IMAGE")
    tag.add_argument("target", metavar="TARGET_IMAGE")
    tag.set_defaults(handler=cmd_tag)

    rmi = subparsers.add_parser("rmi", help="remove images (untag; delete when no tag is left)")
    rmi.add_argument("-f", "--force", action="store_true", help="remove every tag, even when in use")
    rmi.add_argument("images", nargs="+", metavar="IMAGE")
    rmi.set_defaults(handler=cmd_rmi)

    inspect = subparsers.add_parser("inspect", help="show images as JSON, like docker image inspect")
    inspect.add_argument("images", nargs="+", metavar="IMAGE")
    inspect.set_defaults(handler=cmd_inspect)

    history = subparsers.add_parser("history", help="show the history of an image")
    history.add_argument("image", metavar="IMAGE")
    history.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    history.add_argument("--format", choices=["table", "json"], default=None)
    history.set_defaults(handler=cmd_history)

    save = subparsers.add_parser("save", help="write images to a docker-archive tar")
    save.add_argument("-o", "--output", metavar="FILE", help="the tar to write (default: stdout)")
    save.add_argument("images", nargs="+", metavar="IMAGE")
    save.set_defaults(handler=cmd_save)

    load = subparsers.add_parser("load", help="load images from a docker-archive or OCI archive")
    load.add_argument("-i", "--input", required=True, metavar="FILE", help="the archive (tar, tar.gz or OCI dir)")
    load.set_defaults(handler=cmd_load)

    importer = subparsers.add_parser("import", help="make a one-layer image from a rootfs tar or directory")
    importer.add_argument("source", metavar="FILE|DIR")
    importer.add_argument("reference", nargs="?", metavar="NAME[:TAG]")
    importer.add_argument("-c", "--change", action="append", metavar="INSTRUCTION",
                          help="apply a Dockerfile instruction (CMD, ENV, LABEL, ...) to the config")
    importer.add_argument("-m", "--message", help="the history comment")
    importer.set_defaults(handler=cmd_import)

    image = subparsers.add_parser("image", help="image management")
    image_commands = image.add_subparsers(dest="image_command", metavar="COMMAND")
    prune = image_commands.add_parser("prune", help="remove dangling (untagged) images")
    prune.add_argument("-a", "--all", action="store_true", help="remove every image not in use, tagged or not")
    prune.add_argument("-f", "--force", action="store_true", help="do not prompt (there is no prompt)")
    prune.set_defaults(handler=cmd_image_prune)
