"""Files the builder itself reads from the context by name: the Buildfile and its ignore file.

The context is hostile (CI builds strangers' pull requests), so a `Buildfile` or `.dockerignore`
that is a symlink is resolved inside the context root, component by component, by this code and
never by the host's resolver; a link whose target leaves the root (an absolute path elsewhere,
or `..` above the root) is refused with an error that names the link, never with the target's
content. BuildKit gives the same guarantee by reading the Dockerfile from its own snapshot.

A file named on the command line (`-f`) at a path outside the context is the user's own and is
read as given.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from builder.errors import ContextError

_MAX_LINK_HOPS = 40


def relative_to_context(context: Path, path: Path) -> str | None:
    """`path` relative to the context when it lies inside it, judged lexically; else None.

    Lexically, so that `ctx/link/Buildfile` with `link -> /etc` still counts as inside the
    context (and is then resolved inside it) instead of being read where the link points.
    """
    absolute = os.path.abspath(path)
    for base in dict.fromkeys((os.path.abspath(context), os.path.realpath(context))):
        if absolute == base:
            return "."
        prefix = base.rstrip("/") + "/"
        if absolute.startswith(prefix):
            return absolute[len(prefix) :]
    return None


def resolve_in_context(context: Path, relpath: str, what: str) -> Path | None:
    """The host path of `relpath` with every symlink resolved inside the context root.

    None when something on the way is missing (or a file stands where a directory should);
    ContextError when a link leads out of the root.
    """
    root = os.path.realpath(context)
    queue = [part for part in relpath.split("/") if part not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while queue:
        name = queue.pop(0)
        if name == "..":
            if not resolved:
                raise _outside(what, relpath)
            resolved.pop()
            continue
        host = os.path.join(root, *resolved, name)
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise ContextError(f"cannot read {what} {relpath!r}: {error.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise ContextError(
                    f"{what} {relpath!r}: too many levels of symbolic links",
                    hint="a symlink loop in the build context",
                )
            target = os.readlink(host)
            if target.startswith("/"):
                if target != root and not target.startswith(root + "/"):
                    raise _outside(what, relpath, "/".join([*resolved, name]), target)
                resolved = []  # an absolute link to the context's own host path stays inside
                target = target[len(root) :]
            queue = [part for part in target.split("/") if part not in ("", ".")] + queue
            continue
        if queue and not stat.S_ISDIR(st.st_mode):
            return None
        resolved.append(name)
    return Path(root, *resolved)


def _outside(what: str, relpath: str, link: str = "", target: str = "") -> ContextError:
    through = f" (symlink {link!r} -> {target!r})" if link else ""
    elsewhere = ", or name a Buildfile outside the context with -f" if what == "Buildfile" else ""
    return ContextError(
        f"{what} {relpath!r} leads out of the build context{through}; it was not read",
        hint=f"symlinks in the build context are never followed out of it; put the file itself in the context{elsewhere}",
    )


def read_limited(path: Path, limit: int, what: str, *, follow_links: bool) -> bytes:
    """Up to `limit` + 1 bytes of a regular file (the caller refuses the extra byte).

    `follow_links=False` (for a path already resolved inside the context) opens with
    O_NOFOLLOW, so a link swapped in meanwhile is refused, not followed. O_NONBLOCK keeps a
    FIFO from blocking the open; anything but a regular file is refused after it.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise ContextError(f"cannot read {what} {str(path)!r}: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ContextError(f"{what} {str(path)!r} is not a regular file", hint="name a file, not a directory or device")
        chunks: list[bytes] = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    except OSError as error:
        raise ContextError(f"cannot read {what} {str(path)!r}: {error.strerror}") from None
    finally:
        os.close(fd)
