"""COPY and ADD: files from the context, a stage, an image, a heredoc or a URL, written into a
fresh layer dir without running a container."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import BuildError
from builder.parse import ast
from builder.progress import Transfer
from builder.solve import cache as cache_keys
from builder.solve.sources import describe_source_for_key
from builder.solve.state import LayerRef
from builder.solve.step import Expand, PreparedStep, StepInput
from builder.userns import check_owner

if TYPE_CHECKING:
    # The copying code (archives, downloads, the staging tree) loads when a COPY runs, not when
    # a cached one is only keyed.
    from builder.solve.copy import Download

LARGE_COPY_BYTES = 32 * 1024 * 1024


class CopyStep(PreparedStep):
    makes_layer = True

    def __init__(self, step: StepInput) -> None:
        instruction = step.instruction
        assert isinstance(instruction, (ast.Copy, ast.Add))
        session, state, expand = step.session, step.state, step.expand
        self.step = step
        self.is_add = isinstance(instruction, ast.Add)
        heredoc_names = {f"<<{doc.delimiter}" for doc in instruction.heredocs} | {
            f"<<-{doc.delimiter}" for doc in instruction.heredocs
        }
        self.sources = [word if _is_heredoc_word(word, heredoc_names) else expand(word) for word in instruction.sources]
        self.dest = expand(instruction.dest)
        self.heredocs = {doc.delimiter: (expand_heredoc(doc.content, expand) if doc.expand else doc.content)
                         for doc in instruction.heredocs}
        self.chown = expand(instruction.chown) if instruction.chown else None
        self.chmod = expand(instruction.chmod) if instruction.chmod else None
        self.exclude = [expand(pattern) for pattern in instruction.exclude]
        self.link = instruction.link
        self.parents = isinstance(instruction, ast.Copy) and instruction.parents
        self.checksum = instruction.checksum if isinstance(instruction, ast.Add) else None
        from_value = expand(instruction.from_) if isinstance(instruction, ast.Copy) and instruction.from_ else None
        file_sources = [word for word in self.sources if not _is_heredoc_word(word, heredoc_names)]
        if self.is_add:
            from builder.solve.copy import git_source_error, is_git_source

            for word in file_sources:
                if is_git_source(word):  # before a URL is fetched for the key, or a path is looked up
                    raise git_source_error(word, instruction.pos)
        platform = step.stage.platform or session.plan.target_platform
        self.source = session.sources.source_for(from_value, file_sources, platform=platform,
                                                 pos=instruction.pos, source_line=step.source_line, step=step.number)
        local_sources = [word for word in file_sources if not _is_url(word)]
        self.workdir = state.workdir()
        self.lower_layers = list(state.layers)
        self.downloads: dict[str, Download] = {}
        self._download_dir: Path | None = None
        urls = [[url, self._url_identity(url)] for url in file_sources if _is_url(url)]
        self.created_by = f"{instruction.keyword} {' '.join(self.sources)} {self.dest} # buildkit"
        self.components = {
            "instruction": [instruction.keyword, self.sources, self.dest, self.heredocs],
            "sources": describe_source_for_key(self.source, local_sources, pos=instruction.pos, session=session,
                                               follow_links=not self.parents),
            "options": {
                "chown": self.chown,
                "chmod": self.chmod,
                "exclude": self.exclude,
                "link": self.link,
                "parents": self.parents,
                "checksum": self.checksum,
                "urls": urls,
            },
            "workdir": self.workdir,
            "from": from_value,
        }

    def _url_identity(self, url: str) -> str:
        """What a remote source holds: its --checksum, or else the digest of the file fetched
        now, which is then the file the layer is made from (a URL's content can change under
        the same name; the key must name the bytes the layer holds)."""
        if self.checksum:
            return self.checksum
        if self._download_dir is None:
            self._download_dir = self.step.session.scratch_dir("url-")
        into = Path(self._download_dir) / str(len(self.downloads))
        into.mkdir()
        from builder.solve.copy import download_url

        got = download_url(url, into, checksum=None, pos=self.step.instruction.pos)
        self.downloads[url] = got
        digest = hashlib.sha256()
        with open(got.path, "rb") as downloaded:
            while chunk := downloaded.read(1 << 20):
                digest.update(chunk)
        return f"sha256:{digest.hexdigest()} mtime:{got.mtime_ns}"

    def execute(self, work: Path) -> LayerRef | None:
        if not self.link:
            return self._execute(work)
        # COPY --link: the layer does not depend on the image below it, so it is cached by the
        # step alone and reused when only earlier steps or the base changed.
        store = self.step.session.store
        link_key = cache_keys.step_key("copy --link", self.components)
        found = store.cache_get(link_key)
        if found is not None and store.has_layer(found["digest"]):
            return LayerRef.from_json(found)
        layer = self._execute(work)
        if layer is not None:
            store.cache_put(link_key, layer.to_json())
        return layer

    def _execute(self, work: Path) -> LayerRef | None:
        from builder.snapshot.view import LayeredView
        from builder.solve.copy import stage_copy, view_dir_meta, view_node, view_resolver

        step = self.step
        session, instruction = step.session, step.instruction
        view = LayeredView(session.lower_dirs(self.lower_layers))
        chown = self._resolve_chown(self.chown, view) if self.chown else None
        if chown is not None:
            # Rootless without enough subordinate ids, say so before copying anything.
            try:
                check_owner(self.dest, *chown, pos=instruction.pos)
            except BuildError as error:
                error.source_line = step.source_line
                raise
        staging = work / "layer"
        staging.mkdir()
        # Bytes copied, shown once a COPY is large enough to take a while (the total is not known
        # before the walk ends).
        copied = Transfer(session.emit, step=step.number, stage=step.stage.label, id="files", text="copying files",
                          threshold=LARGE_COPY_BYTES)
        # With --link the destination is laid out without looking at the image below (BuildKit:
        # files land in an empty dir that is then merged), so the layer is the same on any base.
        stage_copy(
            self.source.context(),
            self.sources,
            self.dest,
            workdir=self.workdir,
            staging_dir=staging,
            dest_is_dir=(lambda _path: False) if self.link else view.is_dir,
            chown=chown,
            chmod=self.chmod,
            exclude=self.exclude,
            parents=self.parents,
            pos=instruction.pos,
            source_date_epoch=session.options.source_date_epoch,
            is_add=self.is_add,
            heredocs=self.heredocs,
            checksum=self.checksum,
            resolve_image_path=None if self.link else view_resolver(view),
            image_dir_meta=None if self.link else view_dir_meta(view),
            image_node=None if self.link else view_node(view),
            download_dir=work,
            downloads=self.downloads,
            on_copied=copied.advance,
            layer_times=True,  # the staging dir becomes the layer: its times as the layer keeps them
        )
        copied.finish()
        return session.commit_layer(staging)

    def _resolve_chown(self, spec: str, view) -> tuple[int, int]:
        from builder.sandbox.users import resolve_user

        _, has_group, _ = spec.partition(":")
        try:
            uid, gid, _ = resolve_user(spec, view)
        except BuildError as error:
            if error.pos is None:
                error.pos = self.step.instruction.pos
                error.source_line = self.step.source_line
            raise
        if not has_group:
            # Docker: a user without a group means the group with the same number as the user.
            gid = uid
        return uid, gid

    def close(self) -> None:
        if self._download_dir is not None:
            shutil.rmtree(self._download_dir, ignore_errors=True)


def expand_heredoc(content: str, expand: Expand) -> str:
    """Variables in an unquoted COPY/ADD heredoc are expanded line by line, quotes kept."""
    lines = content.split("\n")
    return "\n".join(expand(_protect_quotes(line)) if "$" in line else line for line in lines)


def _protect_quotes(line: str) -> str:
    # expand_word removes quotes as Docker's word processing does; in heredoc bodies quotes are text.
    return line.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')


def _is_heredoc_word(word: str, heredoc_names: set[str]) -> bool:
    return word.strip("'\"") in heredoc_names or word.replace("'", "").replace('"', "") in heredoc_names


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))
