"""Image references (`[registry/]repository[:tag][@digest]`) parsed and normalised like Docker.

`alpine` means `docker.io/library/alpine:latest`; `localhost:5000/app` keeps its registry. The
store keys tags by the *familiar* form (`alpine:latest`, `localhost:5000/app:v1`), as `docker
images` shows them, so `alpine`, `alpine:latest` and `docker.io/library/alpine` are one tag.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from builder.errors import BuildError

DEFAULT_REGISTRY = "docker.io"
LEGACY_DEFAULT_REGISTRY = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$"
)
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
_NAME_MAX = 255


class InvalidReference(BuildError):
    """An image name/tag/digest that Docker would refuse."""


@dataclass(frozen=True)
class Reference:
    registry: str  # "docker.io", "localhost:5000", "ghcr.io"
    repository: str  # "library/alpine", "org/app"
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Fully qualified name without tag or digest: `docker.io/library/alpine`."""
        return f"{self.registry}/{self.repository}"

    def familiar_name(self) -> str:
        """The short name Docker shows: `alpine`, `user/app`, `localhost:5000/app`."""
        if self.registry != DEFAULT_REGISTRY:
            return self.name
        repo = self.repository
        if repo.startswith(OFFICIAL_REPO_PREFIX) and repo.count("/") == 1:
            repo = repo[len(OFFICIAL_REPO_PREFIX):]
        return repo

    def with_tag(self, tag: str) -> "Reference":
        return Reference(self.registry, self.repository, tag, self.digest)

    def tag_or_latest(self) -> str:
        return self.tag or DEFAULT_TAG

    def familiar(self) -> str:
        """Familiar name with tag and/or digest as given: `alpine:3.19`, `app@sha256:...`."""
        return self._render(self.familiar_name())

    def __str__(self) -> str:
        return self._render(self.name)

    def _render(self, name: str) -> str:
        out = name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    # Docker's rule: the first component is a registry only if it looks like a host name.
    if not sep or (
        "." not in first and ":" not in first and first != "localhost" and first.lower() == first
    ):
        domain, remainder = DEFAULT_REGISTRY, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_REGISTRY:
        domain = DEFAULT_REGISTRY
    if domain == DEFAULT_REGISTRY and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_reference(ref: str) -> Reference:
    """Parse and normalise a reference; tag stays None when not given (see `tag_or_latest`)."""
    text = ref.strip()
    if not text:
        raise InvalidReference("empty image reference", hint="give a name like `app` or `app:1.0`")
    name, at, digest = text.partition("@")
    if at:
        if not _DIGEST_RE.match(digest):
            raise InvalidReference(f"invalid digest in image reference {ref!r}",
                                   hint="a digest looks like sha256:<64 hex digits>")
    tag: str | None = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG_RE.match(tag):
            raise InvalidReference(
                f"invalid tag {tag!r} in image reference {ref!r}",
                hint="tags are up to 128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'",
            )
    if not name:
        raise InvalidReference(f"invalid image reference {ref!r}: missing name")
    domain, repository = _split_domain(name)
    if not _DOMAIN_RE.match(domain):
        raise InvalidReference(f"invalid registry host {domain!r} in image reference {ref!r}")
    for component in repository.split("/"):
        if not _PATH_COMPONENT_RE.match(component):
            hint = "repository names must be lowercase" if component.lower() != component else (
                "name components are lowercase letters and digits separated by '.', '_', '__' or '-'")
            raise InvalidReference(f"invalid image reference {ref!r}", hint=hint)
    if len(domain) + 1 + len(repository) > _NAME_MAX:
        raise InvalidReference(f"image name in {ref!r} is longer than {_NAME_MAX} characters")
    return Reference(domain, repository, tag, digest if at else None)


def normalize_tag(ref: str) -> str:
    """The store's key for a tag: familiar name plus tag, `latest` by default (`alpine:latest`)."""
    parsed = parse_reference(ref)
    if parsed.digest:
        raise InvalidReference(f"{ref!r} names a digest, not a tag",
                               hint="tag names look like `name[:tag]`")
    return f"{parsed.familiar_name()}:{parsed.tag_or_latest()}"


def split_tag(tag_name: str) -> tuple[str, str]:
    """`localhost:5000/app:v1` -> (`localhost:5000/app`, `v1`) for an already normalised tag."""
    parsed = parse_reference(tag_name)
    return parsed.familiar_name(), parsed.tag_or_latest()
