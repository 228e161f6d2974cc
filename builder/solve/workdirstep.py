"""WORKDIR: the config change, and the directory made as BuildKit makes it.

BuildKit (dockerfile2llb's dispatchWorkdir) runs `mkdir -p` on the working directory in a file
operation of its own, whether or not a later step writes there:

* a layer for every WORKDIR but `/` exactly, even when the directory already exists (the layer
  is then empty) and the history entry is not an empty one;
* missing directories are made 0755, owned by the USER in effect as BuildKit's file operations
  read it (`fileop_owner`); directories that exist are left as they are;
* the path is resolved in the image, symlinks followed and never out of its root; a component
  that is a file (or a link that cannot be followed) is an error, not replaced.

The layer holds what overlayfs would hold after that mkdir: the new directories and their
parents, the parents with the image's own metadata.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import BuildError
from builder.parse import ast
from builder.solve import metadata
from builder.solve.state import ImageState, LayerRef
from builder.solve.step import PreparedStep, StepInput

if TYPE_CHECKING:
    from builder.snapshot.view import LayeredView

_NO_CHANGE_ID = 2**32 - 1  # (uid_t)-1: chown leaves the owner as it is


class WorkdirStep(PreparedStep):
    def __init__(self, step: StepInput) -> None:
        assert isinstance(step.instruction, ast.Workdir)
        self.step = step
        self.created_by, self.change = metadata.describe(step.instruction, step.state, step.expand)
        self.workdir: str = self.change.set["WorkingDir"]
        self.makes_layer = self.workdir != "/"
        self.user = step.state.user()
        self.lower_layers = list(step.state.layers)
        self.components = {
            "instruction": self.created_by,
            "change": self.change.to_json(),
            "mkdir": {"user": self.user},
        }

    def execute(self, work: Path) -> LayerRef | None:
        from builder.snapshot.view import LayeredView

        session = self.step.session
        view = LayeredView(session.lower_dirs(self.lower_layers))
        target = self._target(view)
        staging = work / "layer"
        staging.mkdir()
        if target is not None:
            try:
                owner = fileop_owner(self.user, view)
            except BuildError as error:
                error.pos, error.source_line = self.step.instruction.pos, self.step.source_line
                raise
            epoch = session.options.source_date_epoch
            # A time this step invents is SOURCE_DATE_EPOCH or 0, never "now" (as COPY's).
            make_dirs(staging, target, view, owner=owner, mtime_ns=(epoch or 0) * 1_000_000_000)
        return session.commit_layer(staging, keep_empty=True)

    def _target(self, view: LayeredView) -> str | None:
        """The directory to make, as a path in the image with its symlinks resolved; None when
        it exists already."""
        target = _resolve_in_image(view, self.workdir)
        parts = [part for part in target.split("/") if part]
        for depth in range(1, len(parts) + 1):
            prefix = "/" + "/".join(parts[:depth])
            st = view.lookup(prefix)
            if st is None:
                return target
            if not stat.S_ISDIR(st.st_mode):
                instruction = self.step.instruction
                raise BuildError(
                    f"WORKDIR {self.workdir}: {prefix} is not a directory", pos=instruction.pos,
                    source_line=self.step.source_line,
                    hint="a file (or a symlink that cannot be followed) is in the way; remove it in an earlier step",
                )
        return None

    def apply(self, state: ImageState) -> None:
        self.change.apply(state)


def _resolve_in_image(view: LayeredView, path: str) -> str:
    """`path` with the symlinks of its longest existing part resolved in the image, chroot-like
    (as BuildKit's fs.RootPath: `..` is taken lexically first), the missing rest kept."""
    from builder.snapshot.view import split_path

    parts = split_path(path)
    for cut in range(len(parts), -1, -1):
        resolved = view.resolve("/" + "/".join(parts[:cut]), follow=True)
        if resolved is not None:
            return "/".join([resolved.rstrip("/"), *parts[cut:]]) or "/"
    return "/"


def make_dirs(staging: Path, target: str, view: LayeredView, *, owner: tuple[int, int], mtime_ns: int) -> None:
    """Lay out in the empty `staging` dir what `mkdir -p target` changes over `view`: each
    directory on the way, those the image has with the image's metadata (as an overlay upper
    dir holds a parent it copied up), the missing ones 0755 and owned by `owner`.

    `target` has its symlinks resolved in `view` and none of its components is a non-directory.
    Owners are set only as root; without root a layer cannot hold them anyway (as when loading)."""
    from builder.snapshot.view import image_xattrs

    as_root = os.geteuid() == 0
    parts = tuple(part for part in target.split("/") if part)
    made: list[tuple[Path, int]] = []
    host = staging
    for depth in range(1, len(parts) + 1):
        host = host / parts[depth - 1]
        os.mkdir(host, 0o700)
        found = view.entry(parts[:depth])
        if found is not None:
            source, st = found
            mode, (uid, gid), mtime = stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid), st.st_mtime_ns
            xattrs = image_xattrs(source)
        else:
            mode, (uid, gid), mtime, xattrs = 0o755, owner, mtime_ns, {}
        if as_root:
            os.chown(host, uid, gid)
        for name, value in xattrs.items():
            try:
                os.setxattr(host, name, value)
            except OSError:
                pass  # e.g. trusted.* without the capability: the directory is still right
        os.chmod(host, mode)  # after chown, which clears setuid/setgid
        made.append((host, mtime))
    for host, mtime in reversed(made):  # deepest first: making a child changes its parent's mtime
        os.utime(host, ns=(mtime, mtime))


def fileop_owner(user: str, view: LayeredView) -> tuple[int, int]:
    """The owner BuildKit's file operations give what they create for USER `user`.

    Not the rules of a RUN (those refuse unknown names): a numeric user is uid and gid both
    (`1000` is 1000:1000 whatever /etc/passwd says), `root` is 0, a name is looked up in the
    image's /etc/passwd and one it does not hold (or no passwd at all) is 0:0; a group after
    `:` is a number or a name from /etc/group, and an unknown name keeps the user's gid."""
    from builder.sandbox.users import read_group, read_passwd

    if not user:
        return 0, 0
    user_part, has_group, group_part = user.partition(":")
    uid = gid = 0
    number = _fileop_id(user_part)
    if number is not None:
        uid = gid = number
    else:
        entry = next((entry for entry in read_passwd(view) if entry.name == user_part), None)
        if entry is not None:
            uid, gid = entry.uid, entry.gid
    if has_group:
        number = _fileop_id(group_part)
        if number is not None:
            gid = number
        else:
            group = next((group for group in read_group(view) if group.name == group_part), None)
            if group is not None:
                gid = group.gid
    return _chown_id(uid), _chown_id(gid)


def _fileop_id(text: str) -> int | None:
    """An id as BuildKit's llb.WithUser reads one: `root`, or decimal digits below 2^32."""
    if text == "root":
        return 0
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > 10:
        return None
    number = int(text)
    return number if number <= _NO_CHANGE_ID else None


def _chown_id(number: int) -> int:
    if number > _NO_CHANGE_ID:  # only from an image's /etc/passwd or /etc/group
        raise BuildError(f"the USER's id {number} is out of range", hint=f"ids go up to {_NO_CHANGE_ID - 1}")
    # chown(-1) changes nothing, so BuildKit's directory keeps the creator's id, root.
    return 0 if number == _NO_CHANGE_ID else number
