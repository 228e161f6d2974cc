"""The steps that change the file system: RUN (in a snapshot and sandbox), COPY and ADD.

`components()` computes what the cache key of a step depends on, cheaply and without side
effects; `execute()` does the work and returns the step's layer (None when nothing changed).
"""
from __future__ import annotations

import hashlib
import re
import shutil
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from builder.errors import BuildError, PlanError, RunError
from builder.parse import ast
from builder.plan.context import BuildContext
from builder.plan.dockerignore import IgnoreMatcher
from builder.plan.platforms import PROXY_ARGS
from builder.progress import Event
from builder.solve import cache as cache_keys
from builder.solve.metadata import command_argv, json_list
from builder.solve.mounts import MountSetup, plan_mounts
from builder.solve.state import ImageState, LayerRef

if TYPE_CHECKING:
    from builder.plan.planner import Stage
    from builder.solve.solver import BuildSession

Expand = Callable[[str], str]
OUTPUT_TAIL_LINES = 15


class Source:
    """A place files are read from; `identity` stands for its content in cache keys (None for the
    context, whose selected files are hashed instead), `context()` gives it as a BuildContext."""

    def __init__(self, identity: str | None, make_context: Callable[[], BuildContext]) -> None:
        self.identity = identity
        self._make_context = make_context
        self._context: BuildContext | None = None

    def context(self) -> BuildContext:
        if self._context is None:
            self._context = self._make_context()
        return self._context


class StepRunner:
    """Runs the file-system steps of one stage."""

    def __init__(self, session: "BuildSession", stage: "Stage") -> None:
        self.session = session
        self.stage = stage
        self.store = session.store
        self.options = session.options
        self._pending: dict[int, dict[str, Any]] = {}

    # --- cache components -----------------------------------------------------------------
    def components(self, instruction: ast.Instruction, state: ImageState, expand: Expand) -> dict[str, Any]:
        if isinstance(instruction, ast.Run):
            return self._run_components(instruction, state, expand)
        assert isinstance(instruction, (ast.Copy, ast.Add))
        return self._copy_components(instruction, state, expand)

    def _run_components(self, instruction: ast.Run, state: ImageState, expand: Expand) -> dict[str, Any]:
        argv = run_argv(instruction, state.shell())
        env = state.run_env()
        network = instruction.network or self.options.network
        if network == "default":
            network = self.options.network
        if network not in ("host", "none"):
            raise PlanError(
                f"RUN --network={network} is not supported",
                pos=instruction.pos,
                source_line=instruction.source.splitlines()[0],
                hint="use --network=host or --network=none",
            )
        if instruction.security not in (None, "sandbox"):
            raise PlanError(
                f"RUN --security={instruction.security} is not supported",
                pos=instruction.pos,
                source_line=instruction.source.splitlines()[0],
                hint="RUN steps always run sandboxed with Docker's default capabilities",
            )
        used_args = {name: value for name, value in state.args.items() if name not in PROXY_ARGS and name not in state.env()}
        prefix = f"|{len(used_args)} " + " ".join(f"{k}={v}" for k, v in sorted(used_args.items())) + " " if used_args else ""
        created_by = f"RUN {prefix}{' '.join(argv) if isinstance(instruction.command, ast.ShellCommand) else json_list(argv)} # buildkit"
        mounts = plan_mounts(
            instruction,
            expand=expand,
            workdir=state.workdir(),
            source_for=lambda from_value, paths: self._source(instruction, from_value, paths),
            stat_cache=self._stat_cache(),
            secrets=self.options.secrets,
        )
        components = {
            "created_by": created_by,
            "instruction": ["RUN", argv],
            # Proxy settings change how a RUN reaches the network, not what it builds (Docker's rule).
            "env": {name: value for name, value in env.items() if name not in PROXY_ARGS},
            "user": state.user(),
            "workdir": state.workdir(),
            "network": network,
            "mounts": [mount.key for mount in mounts],
        }
        self._pending[id(instruction)] = {"argv": argv, "env": env, "network": network, "mounts": mounts}
        return components


    def _copy_components(self, instruction: ast.Copy | ast.Add, state: ImageState, expand: Expand) -> dict[str, Any]:
        keyword = instruction.keyword
        heredoc_names = {f"<<{doc.delimiter}" for doc in instruction.heredocs} | {
            f"<<-{doc.delimiter}" for doc in instruction.heredocs
        }
        sources = [source if _is_heredoc_word(source, heredoc_names) else expand(source) for source in instruction.sources]
        dest = expand(instruction.dest)
        heredocs = {doc.delimiter: (expand_heredoc(doc.content, expand) if doc.expand else doc.content) for doc in instruction.heredocs}
        chown = expand(instruction.chown) if instruction.chown else None
        chmod = expand(instruction.chmod) if instruction.chmod else None
        excludes = [expand(pattern) for pattern in instruction.exclude]
        from_value = expand(instruction.from_) if isinstance(instruction, ast.Copy) and instruction.from_ else None
        file_sources = [word for word in sources if not _is_heredoc_word(word, heredoc_names)]
        source = self._source(instruction, from_value, file_sources)
        local_sources = [word for word in file_sources if not _is_url(word)]
        if source.identity is not None:
            sources_digest = source.identity
        elif local_sources:
            context = source.context()
            sources_digest = context.content_digest(context.select(local_sources, pos=instruction.pos), self._stat_cache())
        else:
            sources_digest = ""
        urls = [source for source in file_sources if _is_url(source)]
        checksum = getattr(instruction, "checksum", None)
        options = {
            "chown": chown,
            "chmod": chmod,
            "exclude": excludes,
            "link": instruction.link,
            "parents": getattr(instruction, "parents", False),
            "checksum": checksum,
            "urls": [[url, self._url_identity(url, checksum, instruction)] for url in urls],
        }
        created_by = f"{keyword} {' '.join(sources)} {dest} # buildkit"
        self._pending[id(instruction)] = {
            "source": source,
            "sources": sources,
            "dest": dest,
            "heredocs": heredocs,
            "chown": chown,
            "chmod": chmod,
            "exclude": excludes,
        }
        return {
            "created_by": created_by,
            "instruction": [keyword, sources, dest, heredocs],
            "sources": sources_digest,
            "options": options,
            "workdir": state.workdir(),
            "from": from_value,
        }

    def _url_identity(self, url: str, checksum: str | None, instruction: ast.Instruction) -> str:
        """What a remote ADD source holds now: its --checksum, or else the digest of a fresh download
        (a URL's content can change under the same name, and a stale cache entry would hide it)."""
        if checksum:
            return checksum
        from builder.solve.copy import download_url

        with self.store.tempdir("u") as scratch:
            got = download_url(url, Path(scratch), checksum=None, pos=instruction.pos)
            digest = hashlib.sha256()
            with open(got.path, "rb") as downloaded:
                while chunk := downloaded.read(1 << 20):
                    digest.update(chunk)
            return f"sha256:{digest.hexdigest()} mtime:{got.mtime_ns}"

    def _ignore(self) -> IgnoreMatcher:
        if not hasattr(self.session, "ignore_matcher"):
            with self.session.lock:
                if not hasattr(self.session, "ignore_matcher"):
                    self.session.ignore_matcher = IgnoreMatcher.load(  # type: ignore[attr-defined]
                        self.options.context_dir, self.options.buildfile_path
                    )
        return self.session.ignore_matcher  # type: ignore[attr-defined]

    def _stat_cache(self):
        from builder.plan.statcache import StatCache

        if not hasattr(self.session, "stat_cache"):
            with self.session.lock:
                if not hasattr(self.session, "stat_cache"):
                    self.session.stat_cache = StatCache(self.store.root / "statcache.db")  # type: ignore[attr-defined]
        return self.session.stat_cache  # type: ignore[attr-defined]

    def _source(self, instruction: ast.Instruction, from_value: str | None, paths: Sequence[str]) -> "Source":
        """Where COPY/ADD or a bind mount reads `paths` from: the context, a stage, or an image.

        A stage or image is flattened only when a step really runs, never to compute a cache key,
        and then only as far as `paths` reach."""
        if from_value is None:
            return Source(None, lambda: BuildContext(self.options.context_dir, self._ignore()))
        plan = self.session.plan
        referenced = None
        for stage in plan.stages:
            if stage.name == from_value.lower():
                referenced = stage.index
        if referenced is None and from_value.isascii() and from_value.isdigit():  # int() refuses "²"
            referenced = int(from_value)
        if referenced is not None:
            with self.session.lock:
                source_state = self.session.stage_states[referenced]
            layers = list(source_state.layers)
            name = f"stage{referenced}"
            identity = "stage:" + source_state.chain
        else:
            record = self._load_image(from_value, instruction)
            self.session.hold(record.manifest_digest)
            from builder.solve.solver import _layers_of

            layers = _layers_of(record.manifest, record.config)
            name = "image-" + record.manifest_digest.split(":")[-1][:16]
            identity = "image:" + record.manifest_digest
        reach = sorted({_static_prefix(path) for path in paths})
        return Source(identity, lambda: BuildContext.for_rootfs(self._flattened(name, layers, reach)))

    def _load_image(self, name: str, instruction: ast.Instruction):
        from builder.errors import ImageNotFound

        try:
            return self.store.load_image(name)
        except ImageNotFound:
            try:
                from builder.registry import pull
            except ImportError:
                raise ImageNotFound(
                    f"COPY --from={name}: no stage or image with that name",
                    pos=instruction.pos,
                    source_line=instruction.source.splitlines()[0],
                    hint="name an earlier stage, or load the image into the store first",
                ) from None
            platform = self.stage.platform or self.session.plan.target_platform
            return pull(self.store, name, platform=str(platform), insecure=self.options.insecure_registries)

    def _flattened(self, name: str, layers: list[LayerRef], reach: list[str]) -> Path:
        from builder.snapshot.view import flatten

        if "/" in reach:
            reach = ["/"]
        label = f"{name}-" + hashlib.sha256("\0".join(reach).encode()).hexdigest()[:12]
        target = self.session.work_dir / f"src-{label}"
        with self.session.lock:
            if target.exists():
                return target
            partial = self.session.work_dir / f"partial-{label}"
            shutil.rmtree(partial, ignore_errors=True)
            lower = [self.store.snapshot_dir(layer.diff_id, layer.digest) for layer in layers]
            flatten(lower, partial, only=None if reach == ["/"] else reach)
            partial.rename(target)
            return target

    # --- execution ------------------------------------------------------------------------
    def execute(self, instruction: ast.Instruction, state: ImageState, components: dict[str, Any]) -> LayerRef | None:
        if not (isinstance(instruction, (ast.Copy, ast.Add)) and instruction.link):
            return self._execute_layer(instruction, state)
        # COPY --link: the layer does not depend on the image below it, so it is cached by the
        # step alone and reused when only earlier steps or the base changed.
        link_key = cache_keys.step_key("copy --link", {k: v for k, v in components.items() if k != "created_by"})
        found = self.store.cache_get(link_key)
        if found is not None and self.store.has_blob(found["digest"]):
            self._pending.pop(id(instruction), None)
            return LayerRef.from_json(found)
        layer = self._execute_layer(instruction, state)
        if layer is not None:
            self.store.cache_put(link_key, layer.to_json())
        return layer

    def _execute_layer(self, instruction: ast.Instruction, state: ImageState) -> LayerRef | None:
        work = Path(self.session.work_dir) / f"s{id(instruction) % 100000}"
        work.mkdir()
        try:
            if isinstance(instruction, ast.Run):
                layer_dir = self._execute_run(instruction, state, work)
            else:
                layer_dir = self._execute_copy(instruction, state, work)
            if layer_dir is None or not any(layer_dir.iterdir()):
                return None
            digests = self.store.put_layer_from_dir(
                layer_dir,
                compression=self.options.compression,
                level=self.options.compression_level,
                source_date_epoch=self.options.source_date_epoch,
                adopt=True,
            )
            return LayerRef(digests.diff_id, digests.digest, digests.size, digests.media_type)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _lower_dirs(self, state: ImageState) -> list[Path]:
        return [self.store.snapshot_dir(layer.diff_id, layer.digest) for layer in state.layers]

    def _execute_run(self, instruction: ast.Run, state: ImageState, work: Path) -> Path | None:
        from builder.sandbox import run as sandbox_run
        from builder.snapshot import prepare

        pending = self._pending.pop(id(instruction))
        mount_setup = MountSetup(self.store.root, work)
        binds = mount_setup.binds(pending["mounts"], self.options.secrets)
        snapshot = prepare(self._lower_dirs(state), work / "w", kind=self.options.snapshotter)
        tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        partial = [""]

        def on_output(chunk: bytes) -> None:
            text = chunk.decode("utf-8", errors="replace")
            lines = (partial[0] + text).split("\n")
            partial[0] = lines.pop()
            tail.extend(lines)
            if text:
                self.session.emit(Event("step-output", self.stage.label, 0, 0, text))

        try:
            status = sandbox_run(
                snapshot,
                pending["argv"],
                env=pending["env"],
                workdir=state.workdir(),
                user=state.user() or None,
                network=pending["network"],
                on_output=on_output,
                extra_binds=binds,
            )
            if partial[0]:
                tail.append(partial[0])
            if status != 0:
                shown = "\n".join(tail)
                raise RunError(
                    f"RUN failed with exit code {status}",
                    exit_status=status,
                    pos=instruction.pos,
                    source_line=instruction.source.splitlines()[0],
                    hint=("last output lines:\n" + shown) if shown else "the command printed nothing",
                )
            diff_dir = work / "diff"
            snapshot.diff(diff_dir)
            return diff_dir
        finally:
            snapshot.cleanup()
            mount_setup.close()

    def _execute_copy(self, instruction: ast.Copy | ast.Add, state: ImageState, work: Path) -> Path:
        from builder.snapshot.view import LayeredView
        from builder.solve.copy import stage_copy, view_dir_meta, view_resolver

        pending = self._pending.pop(id(instruction))
        lower = self._lower_dirs(state)
        view = LayeredView(lower)
        chown = self._resolve_chown(pending["chown"], view, instruction) if pending["chown"] else None
        staging = work / "layer"
        staging.mkdir()
        # With --link the destination is laid out without looking at the image below (BuildKit:
        # files land in an empty dir that is then merged), so the layer is the same on any base.
        linked = instruction.link
        stage_copy(
            pending["source"].context(),
            pending["sources"],
            pending["dest"],
            workdir=state.workdir(),
            staging_dir=staging,
            dest_is_dir=(lambda _path: False) if linked else view.is_dir,
            chown=chown,
            chmod=pending["chmod"],
            exclude=pending["exclude"],
            parents=getattr(instruction, "parents", False),
            pos=instruction.pos,
            source_date_epoch=self.options.source_date_epoch,
            is_add=isinstance(instruction, ast.Add),
            heredocs=pending["heredocs"],
            checksum=getattr(instruction, "checksum", None),
            resolve_image_path=None if linked else view_resolver(view),
            image_dir_meta=None if linked else view_dir_meta(view),
        )
        return staging

    def _resolve_chown(self, spec: str, view, instruction: ast.Instruction) -> tuple[int, int]:
        from builder.sandbox.users import resolve_user

        user, has_group, group = spec.partition(":")
        try:
            uid, gid, _ = resolve_user(spec, view)
        except BuildError as error:
            if error.pos is None:
                error.pos = instruction.pos
                error.source_line = instruction.source.splitlines()[0]
            raise
        if not has_group:
            # Docker: a user without a group means the group with the same number as the user.
            gid = uid
        return uid, gid


def run_argv(instruction: ast.Run, shell: list[str]) -> list[str]:
    """The argv of a RUN, heredocs included the way BuildKit runs them."""
    command = instruction.command
    if isinstance(command, ast.ExecCommand) or not instruction.heredocs:
        return command_argv(command, shell)
    text = command.text.strip()
    only = instruction.heredocs[0]
    if len(instruction.heredocs) == 1 and text.lstrip("<-").strip("'\"") == only.delimiter:
        # `RUN <<EOF` alone: the heredoc is the script.
        return [*shell, only.content]
    script = command.text.rstrip("\n") + "\n" + "".join(
        doc.content + ("" if doc.content.endswith("\n") or not doc.content else "\n") + doc.delimiter + "\n"
        for doc in instruction.heredocs
    )
    return [*shell, script]


def expand_heredoc(content: str, expand: Expand) -> str:
    """Variables in an unquoted COPY/ADD heredoc are expanded line by line, quotes kept."""
    lines = content.split("\n")
    return "\n".join(expand(_protect_quotes(line)) if "$" in line else line for line in lines)


def _protect_quotes(line: str) -> str:
    # expand_word removes quotes as Docker's word processing does; in heredoc bodies quotes are text.
    return line.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')


def _is_heredoc_word(word: str, heredoc_names: set[str]) -> bool:
    return word.strip("'\"") in heredoc_names or word.replace("'", "").replace('"', "") in heredoc_names


_WILDCARD = re.compile(r"[*?\[\\]")


def _static_prefix(pattern: str) -> str:
    """The part of a source path before its first wildcard component: what a copy can reach."""
    kept: list[str] = []
    for part in pattern.split("/"):
        if _WILDCARD.search(part):
            break
        if part and part != ".":
            kept.append(part)
    return "/" + "/".join(kept)


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))

