"""`pull` and `push`: move images between the local store and a registry."""
from __future__ import annotations

import argparse
import contextlib
from typing import Iterator

from builder.errors import BuildError
from builder.image.reference import parse_reference
from builder.image.store import Store
from builder.progress import Renderer
from builder.registry import pull, push


def _insecure(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(getattr(args, "insecure_registry", None) or ())


@contextlib.contextmanager
def _progress(args: argparse.Namespace) -> Iterator[Renderer | None]:
    """Byte progress of the transfer on stderr, as `build` shows it (`--progress`, default auto)."""
    from builder.display import make_progress

    renderer = make_progress(getattr(args, "progress", "quiet"))
    failed = True
    try:
        yield renderer
        failed = False
    finally:
        if renderer is not None:
            renderer.close(failed=failed)


def cmd_pull(args: argparse.Namespace) -> int:
    store = Store.open(getattr(args, "root", None))
    reference = parse_reference(args.reference)
    if not reference.tag and not reference.digest:
        print("Using default tag: latest")
    full = reference if (reference.tag or reference.digest) else reference.with_tag("latest")
    try:
        before: str | None = store.resolve(full.familiar())
    except BuildError:
        before = None
    with _progress(args) as on_event:
        record = pull(store, args.reference, platform=args.platform, insecure=_insecure(args),
                      on_event=on_event, step=1 if on_event is not None else 0)
    print(f"Digest: {record.manifest_digest}")
    status = "Image is up to date" if before == record.manifest_digest else "Downloaded newer image"
    print(f"Status: {status} for {full.familiar()}")
    print(str(full))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    store = Store.open(getattr(args, "root", None))
    destination = args.destination or args.reference
    target = parse_reference(destination)
    with _progress(args) as on_event:
        digest = push(store, args.reference, destination, insecure=_insecure(args), compression=args.compression,
                      level=args.compression_level, force_compression=args.force_compression,
                      on_event=on_event, step=1 if on_event is not None else 0)
    size = store.blob_path(digest).stat().st_size if store.has_blob(digest) else 0
    print(f"The push refers to repository [{target.name}]")
    print(f"{target.tag_or_latest()}: digest: {digest} size: {size}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    pull_parser = subparsers.add_parser("pull", help="pull an image from a registry into the store")
    pull_parser.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")
    pull_parser.add_argument("--platform", help="os/arch[/variant] to pick from a multi-platform image")
    pull_parser.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                             help="allow plain HTTP to this registry")
    _add_progress(pull_parser)
    pull_parser.set_defaults(handler=cmd_pull)

    push_parser = subparsers.add_parser("push", help="push an image from the store to a registry")
    push_parser.add_argument("reference", metavar="NAME[:TAG]")
    push_parser.add_argument("destination", nargs="?", metavar="DEST",
                             help="push under this name instead (HOST/REPO[:TAG])")
    push_parser.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                             help="allow plain HTTP to this registry")
    push_parser.add_argument("--compression", default="gzip", choices=["gzip", "zstd", "uncompressed"],
                             help="compression of the layers made here (a base image's blobs go as they are)")
    push_parser.add_argument("--compression-level", type=int, help="compression level")
    push_parser.add_argument("--force-compression", action="store_true",
                             help="recompress a base image's layers too")
    _add_progress(push_parser)
    push_parser.set_defaults(handler=cmd_push)


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", default="auto", choices=["auto", "tty", "plain", "quiet", "rawjson", "json"],
                        help="byte progress on stderr (auto: a live view on a terminal, plain lines otherwise)")
    parser.add_argument("-q", "--quiet", dest="progress", action="store_const", const="quiet",
                        help="no progress (as --progress=quiet)")
