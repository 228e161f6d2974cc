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
import re
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence, TextIO

from builder.commands.gotemplate import parse_template
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


# Docker's table headers for the row fields a `table {{...}}` format names.
TABLE_HEADERS = {"ID": "IMAGE ID", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY"}


def print_formatted(rows: Sequence[dict], fmt: str | None) -> bool:
    """Print rows as --format asks (json lines or a Go template); False for the default table."""
    if fmt in (None, "table"):
        return False
    if fmt == "json":
        for row in rows:
            print(json.dumps(row, sort_keys=True, ensure_ascii=False))
        return True
    with_header = fmt.startswith("table ")
    template = parse_template(fmt[len("table "):] if with_header else fmt)
    if not with_header:
        for row in rows:
            print(template.render(row))
        return True
    headers = {name: TABLE_HEADERS.get(name, re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).upper())
               for name in template.top_fields()}
    header = template.render(headers).split("\t")
    cells = [template.render(row).split("\t") for row in rows]
    print_table([header, *cells], sys.stdout)
    return True


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
    if print_formatted(rows, args.format):
        return 0
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
    image_id = store.load_image(digest).config_digest
    # By ID with a single tag, docker untags and deletes without -f; the store wants force for that.
    done = store.delete_image(ref, force=force or (tag is None and len(tags) <= 1))
    # docker rmi names what it deleted by image ID (the config digest), as `images` shows it.
    return [f"Deleted: {image_id}" if line == f"Deleted: {digest}" else line for line in done]


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
    template = parse_template(args.format) if getattr(args, "format", None) else None
    for ref in args.images:
        try:
            found.append(inspect_record(store, store.load_image(ref)))
        except ImageNotFound as exc:
            missing.append(exc)
    if template is not None:
        for entry in found:
            print(template.render(entry))
    else:
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
    if args.quiet:
        for row in rows:
            print(row["ID"] if args.no_trunc or row["ID"] == "<missing>" else short_id(row["ID"]))
        return 0
    if print_formatted(rows, args.format):
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
    if args.input is None:
        return _load_from_stdin(store)
    source = args.input
    if not Path(source).exists():
        raise BuildError(f"cannot load {source}: no such file or directory")
    _report_loaded(store, load_archive(store, source))
    return 0


def _load_from_stdin(store: Store) -> int:
    from builder.image.importer import load_archive

    if sys.stdin.isatty():
        raise BuildError("requested load from stdin, but stdin is a terminal",
                         hint="pipe an archive in (builder load < image.tar) or name it with -i FILE")
    # The archive is read more than once (manifest first, then layers): spool the stream to a
    # private file in the store's own temp area, which the store removes even after a crash.
    with store.tempdir(prefix="load-") as scratch:
        spooled = scratch / "stdin.tar"
        with open(spooled, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        if spooled.stat().st_size == 0:
            raise BuildError("requested load from stdin, but stdin is empty",
                             hint="pipe an archive in (builder load < image.tar) or name it with -i FILE")
        _report_loaded(store, load_archive(store, str(spooled)))
    return 0


def _report_loaded(store: Store, loaded: Iterable[tuple[str | None, str]]) -> None:
    for tag, digest in loaded:
        if tag:
            print(f"Loaded image: {tag}")
        else:
            print(f"Loaded image ID: {store.load_image(digest).config_digest}")


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


def _add_images(subparsers: argparse._SubParsersAction, name: str) -> None:
    images = subparsers.add_parser(name, help="list images in the store (SIZE: layers uncompressed, as Docker shows it)")
    images.add_argument("filter_repository", nargs="?", metavar="REPOSITORY", help="only this repository")
    images.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    images.add_argument("--format", default=None,
                        help="table (default), json (one object per line), or a Go template such as '{{.Repository}}:{{.Tag}}'")
    images.set_defaults(handler=cmd_images)


def _add_tag(subparsers: argparse._SubParsersAction) -> None:
    tag = subparsers.add_parser("tag", help="name an image: tag SOURCE TARGET")
    tag.add_argument("source", metavar="SOURCE_IMAGE")
    tag.add_argument("target", metavar="TARGET_IMAGE")
    tag.set_defaults(handler=cmd_tag)


def _add_rmi(subparsers: argparse._SubParsersAction, name: str) -> None:
    rmi = subparsers.add_parser(name, help="remove images (untag; delete when no tag is left)")
    rmi.add_argument("-f", "--force", action="store_true", help="remove every tag, even when in use")
    rmi.add_argument("images", nargs="+", metavar="IMAGE")
    rmi.set_defaults(handler=cmd_rmi)


def _add_inspect(subparsers: argparse._SubParsersAction) -> None:
    inspect = subparsers.add_parser("inspect", help="show images as JSON, like docker image inspect")
    inspect.add_argument("-f", "--format", help="a Go template applied to each image, e.g. '{{.Id}}' or '{{json .Config}}'")
    inspect.add_argument("--type", choices=["image"], help="accepted as in docker: the store holds only images")
    inspect.add_argument("images", nargs="+", metavar="IMAGE")
    inspect.set_defaults(handler=cmd_inspect)


def _add_history(subparsers: argparse._SubParsersAction) -> None:
    history = subparsers.add_parser("history", help="show the history of an image")
    history.add_argument("image", metavar="IMAGE")
    history.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    history.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    history.add_argument("--format", default=None, help="table (default), json, or a Go template such as '{{.CreatedBy}}'")
    history.set_defaults(handler=cmd_history)


def _add_save(subparsers: argparse._SubParsersAction) -> None:
    save = subparsers.add_parser("save", help="write images to a docker-archive tar")
    save.add_argument("-o", "--output", metavar="FILE", help="the tar to write (default: stdout)")
    save.add_argument("images", nargs="+", metavar="IMAGE")
    save.set_defaults(handler=cmd_save)


def _add_load(subparsers: argparse._SubParsersAction) -> None:
    load = subparsers.add_parser("load", help="load images from a docker-archive or OCI archive")
    load.add_argument("-i", "--input", metavar="FILE",
                      help="the archive (tar, tar.gz or OCI dir); default: standard input, as docker load")
    load.add_argument("-q", "--quiet", action="store_true", help="accepted as in docker (there is no progress to hide)")
    load.set_defaults(handler=cmd_load)


def _add_import(subparsers: argparse._SubParsersAction) -> None:
    importer = subparsers.add_parser("import", help="make a one-layer image from a rootfs tar or directory")
    importer.add_argument("source", metavar="FILE|DIR")
    importer.add_argument("reference", nargs="?", metavar="NAME[:TAG]")
    importer.add_argument("-c", "--change", action="append", metavar="INSTRUCTION",
                          help="apply a Dockerfile instruction (CMD, ENV, LABEL, ...) to the config")
    importer.add_argument("-m", "--message", help="the history comment")
    importer.set_defaults(handler=cmd_import)


def _add_image_prune(subparsers: argparse._SubParsersAction) -> None:
    prune = subparsers.add_parser("prune", help="remove dangling (untagged) images")
    prune.add_argument("-a", "--all", action="store_true", help="remove every image not in use, tagged or not")
    prune.add_argument("-f", "--force", action="store_true", help="do not prompt (there is no prompt)")
    prune.set_defaults(handler=cmd_image_prune)


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_images(subparsers, "images")
    _add_tag(subparsers)
    _add_rmi(subparsers, "rmi")
    _add_inspect(subparsers)
    _add_history(subparsers)
    _add_save(subparsers)
    _add_load(subparsers)
    _add_import(subparsers)

    # `docker image ls|rm|inspect|...`: the same commands under Docker's management command.
    image = subparsers.add_parser("image", help="image management: ls, inspect, history, tag, rm, prune, save, load, import")
    image_commands = image.add_subparsers(dest="image_command", metavar="COMMAND")
    _add_images(image_commands, "ls")
    _add_images(image_commands, "list")
    _add_inspect(image_commands)
    _add_history(image_commands)
    _add_tag(image_commands)
    _add_rmi(image_commands, "rm")
    _add_image_prune(image_commands)
    _add_save(image_commands)
    _add_load(image_commands)
    _add_import(image_commands)
