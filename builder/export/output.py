"""The `--output` flag: `type=oci,dest=out.tar`, `type=docker,dest=img.tar,name=app:1`,
`type=tar,dest=rootfs.tar`, `type=local,dest=dir`, `type=registry,name=host/app:1,push=true`.

A bare value without `=` means a local directory (`-o out/`), and `-` alone means a rootfs tar on
stdout, as with `docker buildx build -o`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from builder.errors import OutputError
from builder.image.reference import InvalidReference, parse_reference
from builder.image.store import Store
from builder.progress import EventCallback, Transfer
from builder.specfields import parse_spec_bool, parse_spec_fields

OUTPUT_TYPES = ("oci", "docker", "tar", "local", "registry", "image")
_KNOWN_KEYS = {
    "oci": {"type", "dest", "tar", "name", "compression", "compression-level", "force-compression"},
    "docker": {"type", "dest", "name", "compression", "compression-level", "force-compression"},
    "tar": {"type", "dest"},
    "local": {"type", "dest"},
    "registry": {"type", "name", "push", "insecure", "compression", "compression-level", "force-compression"},
    "image": {"type", "name", "push", "insecure", "compression", "compression-level", "force-compression"},
}


@dataclass(frozen=True)
class OutputSpec:
    type: str  # oci | docker | tar | local | registry
    dest: str | None = None  # path, or "-" for stdout
    tar: bool = True  # oci only: False writes a layout directory
    names: tuple[str, ...] = ()
    push: bool = False
    attrs: dict[str, str] = field(default_factory=dict)  # everything as given, for exporters' options
    # This output's compression= / compression-level= / force-compression= (None: the build's own).
    compression: str | None = None
    compression_level: int | None = None
    force_compression: bool = False


def _bool(key: str, value: str, spec: str) -> bool:
    return parse_spec_bool(value, key, f"output {spec!r}", OutputError)


def parse_output_spec(spec: str) -> OutputSpec:
    text = spec.strip()
    if not text:
        raise OutputError("empty --output value", hint="e.g. --output type=oci,dest=image.tar")
    if "=" not in text:
        if text == "-":
            return OutputSpec(type="tar", dest="-", attrs={"type": "tar", "dest": "-"})
        return OutputSpec(type="local", dest=text, attrs={"type": "local", "dest": text})
    attrs = parse_spec_fields(text, f"output {spec!r}", OutputError, repeatable=frozenset({"name"}))
    kind = attrs.get("type")
    if kind is None:
        raise OutputError(f"output {spec!r} has no type",
                          hint="start with type=oci, type=docker, type=tar, type=local or type=registry")
    kind = kind.strip().lower()
    if kind not in OUTPUT_TYPES:
        raise OutputError(f"unknown output type {kind!r}", hint="use one of: oci, docker, tar, local, registry")
    unknown = sorted(set(attrs) - _KNOWN_KEYS[kind])
    if unknown:
        raise OutputError(f"unknown option {unknown[0]!r} for output type {kind}",
                          hint="valid options: " + ", ".join(sorted(_KNOWN_KEYS[kind] - {"type"})))
    names = tuple(n.strip() for n in attrs.get("name", "").split(",") if n.strip())
    for name in names:
        try:
            parse_reference(name)
        except InvalidReference as exc:
            raise OutputError(f"invalid image name {name!r} in output {spec!r}: {exc.message}", hint=exc.hint) from exc
    dest = attrs.get("dest")
    layer_options = _layer_options(attrs, spec)
    if kind in ("registry", "image"):
        push = _bool("push", attrs["push"], spec) if "push" in attrs else kind == "registry"
        if not names:
            raise OutputError(f"output type {kind} needs name=<image reference>", hint="e.g. type=registry,name=localhost:5000/app:1")
        return OutputSpec(type="registry" if push else kind, names=names, push=push, attrs=attrs, **layer_options)
    if not dest:
        raise OutputError(f"output type {kind} needs dest=<path>", hint=f"e.g. type={kind},dest=" +
                          ("out" if kind == "local" else "image.tar"))
    if kind == "local" and dest == "-":
        raise OutputError("local output cannot be written to stdout", hint="use type=tar,dest=- for a tar on stdout")
    tar = _bool("tar", attrs["tar"], spec) if "tar" in attrs else True
    if not tar and dest == "-":
        raise OutputError("an OCI layout directory cannot be written to stdout", hint="drop tar=false, or give a directory")
    return OutputSpec(type=kind, dest=dest, tar=tar, names=names, attrs=attrs, **layer_options)


def _layer_options(attrs: dict[str, str], spec: str) -> dict:
    """compression=, compression-level= and force-compression=, checked (BuildKit's keys)."""
    from builder.image.variants import COMPRESSIONS, LEVEL_RANGES

    options: dict = {}
    if "compression" in attrs:
        compression = attrs["compression"].strip().lower()
        if compression not in COMPRESSIONS:
            raise OutputError(f"unsupported compression {attrs['compression']!r} in output {spec!r}",
                              hint="use compression=gzip, zstd or uncompressed")
        options["compression"] = compression
    if "compression-level" in attrs:
        text = attrs["compression-level"].strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 2):
            raise OutputError(f"invalid compression-level {text!r} in output {spec!r}", hint="give a whole number")
        level = int(text)
        low, high = LEVEL_RANGES[options.get("compression", "zstd")]
        if "compression" in options and not low <= level <= high:
            raise OutputError(f"compression-level {level} is out of range for {options['compression']}",
                              hint=f"{options['compression']} levels go from {low} to {high}")
        options["compression_level"] = level
    if "force-compression" in attrs:
        options["force_compression"] = _bool("force-compression", attrs["force-compression"], spec)
    return options


def write_output(store: Store, manifest_digest: str, spec: OutputSpec, tags: Sequence[str] = (), *,
                 compression: str = "gzip", compression_level: int | None = None,
                 on_event: EventCallback | None = None, step: int = 0) -> str | None:
    """Export the image as `spec` says; its layers, where the format compresses them, in the
    output's own compression or else `compression` (the build's --compression). Returns the
    digest of the manifest it shipped (oci, registry), else None.

    `on_event` gets the bytes written (progress events, rate-limited) and pushes, marked `step`."""
    # Each exporter is imported in its branch: an OCI export need not load layer extraction.
    names = list(dict.fromkeys([*spec.names, *tags]))
    if spec.compression is not None:
        compression, compression_level = spec.compression, spec.compression_level
    elif spec.compression_level is not None:
        compression_level = spec.compression_level
    layers = {"compression": compression, "level": compression_level, "force": spec.force_compression}
    written = Transfer(on_event, step=step, id="archive", text=f"writing {spec.dest}")
    if spec.type == "oci":
        from builder.export.oci_layout import export_oci

        shipped = export_oci(store, manifest_digest, _dest(spec), tar=spec.tar, tags=names, compression=compression,
                             level=compression_level, force_compression=spec.force_compression, transfer=written)
        written.finish()
        return shipped.manifest_digest
    if spec.type == "docker":
        from builder.export.docker_archive import export_docker_archive

        export_docker_archive(store, [(manifest_digest, names)], _dest(spec), transfer=written)
        written.finish()
    elif spec.type == "tar":
        from builder.export.rootfs import export_rootfs_tar

        export_rootfs_tar(store, manifest_digest, _dest(spec), transfer=written)
        written.finish()
    elif spec.type == "local":
        from builder.export.rootfs import export_local

        export_local(store, manifest_digest, _dest(spec))
    elif spec.type == "image":
        for name in names:
            store.tag(name, manifest_digest)
    else:
        return _push(store, manifest_digest, spec, layers, on_event, step)
    return None


def describe_output(spec: OutputSpec) -> str:
    """How progress names an output: `oci image layout out.tar`, `registry localhost:5000/app:1`."""
    kinds = {"oci": "oci image layout", "docker": "docker archive", "tar": "rootfs tar", "local": "directory",
             "image": "image", "registry": "registry"}
    where = spec.dest if spec.dest is not None else ", ".join(spec.names)
    return f"{kinds[spec.type]} {where}" if where else kinds[spec.type]


def _push(store: Store, manifest_digest: str, spec: OutputSpec, layers: dict, on_event: EventCallback | None,
          step: int) -> str | None:
    """type=registry: push to every name= (the other names/tags of the build are not pushed)."""
    from builder.registry.pushing import push_image

    insecure = _bool("insecure", spec.attrs["insecure"], "output") if "insecure" in spec.attrs else False
    pushed = None
    for name in spec.names:
        hosts = [parse_reference(name).registry] if insecure else []
        pushed = push_image(store, manifest_digest, name, insecure=hosts, compression=layers["compression"],
                            level=layers["level"], force_compression=layers["force"], on_event=on_event, step=step)
    return pushed


def _dest(spec: OutputSpec) -> Path | str:
    assert spec.dest is not None
    return spec.dest if spec.dest == "-" else Path(spec.dest)
