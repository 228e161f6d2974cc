"""The cases: each a Dockerfile (`{BASE}` is the shared busybox base) and the context it is built in.

Grouped by instruction; each case is small and says in its name what it covers. A case may
exercise a behaviour the issue lists as different today: known_differences.toml says which.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .context import Dir, File, HardLink, Item, Symlink, Tar, TarMember
from .context import write_context as _write_items

BASE = "conformance-busybox"  # Env PATH and Cmd ["sh"], as Docker Hub's busybox
BARE = "conformance-bare"  # the same rootfs with an empty config, as `docker import` makes


@dataclass(frozen=True)
class Case:
    name: str
    dockerfile: str
    context: Mapping[str, Item] = field(default_factory=dict)
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    secrets: Mapping[str, str] = field(default_factory=dict)  # id -> file in the context


def host_platform() -> str:
    from builder.platforms import Platform

    return str(Platform.host())


def write_context(case: Case, root: Path) -> None:
    text = case.dockerfile.replace("{BASE}", BASE).replace("{BARE}", BARE).replace("{HOST}", host_platform())
    _write_items(root, {"Dockerfile": text, **case.context})


def _case(name: str, dockerfile: str, context: Mapping[str, Item] | None = None, *,
          build_args: Mapping[str, str] | None = None, target: str | None = None,
          secrets: Mapping[str, str] | None = None) -> Case:
    return Case(name, dockerfile, dict(context or {}), dict(build_args or {}), target, dict(secrets or {}))


SMALL = {"a.txt": "alpha\n", "b.txt": "beta\n", "c.md": "gamma\n"}
TREE: dict[str, Item] = {
    "src": Dir(0o755),
    "src/main.sh": File("#!/bin/sh\necho main\n", 0o755),
    "src/lib": Dir(0o750),
    "src/lib/util.txt": File("util\n", 0o600),
    "src/lib/deep/leaf.txt": "leaf\n",
    "src/empty": Dir(0o700),
}

CASES: tuple[Case, ...] = (
    # --- FROM ------------------------------------------------------------------------------------
    _case("from-base", "FROM {BASE}\nLABEL case=from-base\n"),
    _case("from-scratch", "FROM scratch\nCOPY a.txt /\n", SMALL),
    _case("from-scratch-tree", "FROM scratch\nCOPY src /app/\nCMD [\"/app/main.sh\"]\n", TREE),
    _case("from-stage", "FROM {BASE} AS parent\nENV FROM_PARENT=1\nRUN echo parent > /parent\n"
          "FROM parent\nRUN echo \"$FROM_PARENT\" > /child\n"),
    _case("from-platform-host", "FROM --platform=$BUILDPLATFORM {BASE} AS build\nARG TARGETPLATFORM\n"
          "ARG BUILDPLATFORM\nRUN echo \"$BUILDPLATFORM $TARGETPLATFORM\" > /platforms\n"
          "FROM --platform={HOST} {BASE}\nCOPY --from=build /platforms /platforms\n"),
    _case("from-arg", "ARG BASE_IMAGE={BASE}\nARG UNUSED=x\nFROM ${BASE_IMAGE}\nARG BASE_IMAGE\n"
          "RUN echo \"$BASE_IMAGE/$UNUSED\" > /from-arg\n"),
    _case("stage-name-capitals", "FROM {BASE} AS Builder\nRUN echo built > /out\n"
          "FROM {BASE}\nCOPY --from=Builder /out /out\n"),
    _case("stage-name-capitals-from", "FROM {BASE} AS Builder\nRUN echo built > /out\nFROM Builder\n"
          "RUN echo child > /child\n"),
    _case("from-base-without-path", "FROM {BARE}\nRUN echo \"$PATH\" > /path-seen\n"),
    _case("multi-stage-target", "FROM {BASE} AS one\nRUN echo one > /one\nFROM one AS two\nRUN echo two > /two\n"
          "FROM {BASE} AS three\nRUN echo three > /three\n", target="two"),
    _case("copy-from-index-and-image", "FROM {BASE}\nRUN echo zero > /zero\nFROM {BASE}\n"
          "COPY --from=0 /zero /from-zero\nCOPY --from={BASE} /etc/passwd /from-image\n"),
    # --- ARG / ENV -------------------------------------------------------------------------------
    _case("arg-build-args", "FROM {BASE}\nARG WITH_DEFAULT=default\nARG GIVEN\nARG UNSET\n"
          "ENV FROM_ARG=${GIVEN}-${WITH_DEFAULT}\n"
          "RUN echo \"$WITH_DEFAULT|$GIVEN|$UNSET|${UNSET:-fallback}\" > /args\n",
          build_args={"GIVEN": "given"}),
    _case("env-expansion", "FROM {BASE}\nENV A=a B=\"b c\" C=${A}x\nENV D ${A:-no} ${UNSET:-dflt} ${A:+alt}\n"
          "ENV E=\"$A\\$B\" F='$A' G=${A}${B} EMPTY=\nENV PATH=/opt/bin:$PATH\n"
          "RUN echo \"$A|$B|$C|$D|$E|$F|$G\" > /env\n"),
    _case("env-override-arg", "FROM {BASE}\nARG V=from-arg\nENV V=from-env\nRUN echo $V > /v\n",
          build_args={"V": "from-cli"}),
    _case("arg-name-expansion", "FROM {BASE}\nARG NAME=dynamic\nARG ${NAME}=value\n"
          "RUN echo \"[$dynamic]\" > /arg-name\n"),
    _case("predefined-args", "FROM {BASE}\nARG HTTP_PROXY\nRUN echo \"$HTTP_PROXY\" > /proxy\n",
          build_args={"HTTP_PROXY": "http://proxy.invalid:3128"}),
    # --- LABEL -----------------------------------------------------------------------------------
    _case("maintainer", "FROM {BASE}\nMAINTAINER Someone <someone@example.invalid>\n"),
    _case("labels", "FROM {BASE}\nARG VERSION=1.2\nLABEL a=b \"with space\"=\"x y\" version=$VERSION\n"
          "LABEL multi=\"one \\\n  two\" empty=\"\"\nLABEL a=overridden\n"),
    # --- USER ------------------------------------------------------------------------------------
    _case("user-name", "FROM {BASE}\nUSER app\nRUN id > /tmp/id && touch /tmp/by-app\n"),
    _case("user-uid", "FROM {BASE}\nUSER 1000\nRUN touch /tmp/by-uid\n"),
    _case("user-uid-gid", "FROM {BASE}\nUSER 1000:50\nRUN touch /tmp/by-uid-gid && id -G > /tmp/groups\n"),
    _case("user-name-group", "FROM {BASE}\nUSER app:staff\nRUN touch /tmp/by-names\n"),
    _case("run-home", "FROM {BASE}\nRUN echo \"$HOME\" > /home-root\nUSER app\n"
          "RUN echo \"$HOME\" > /tmp/home-app\nUSER 4242\nRUN echo \"$HOME\" > /tmp/home-unknown\n"),
    # --- WORKDIR ---------------------------------------------------------------------------------
    _case("workdir-absolute-new", "FROM {BASE}\nWORKDIR /srv/app/data\n"),
    _case("workdir-relative", "FROM {BASE}\nWORKDIR /opt\nWORKDIR sub\nWORKDIR ../other\n"
          "RUN pwd > /pwd\n"),
    _case("workdir-trailing-slash", "FROM {BASE}\nWORKDIR /tmp/\n"),
    _case("workdir-as-user", "FROM {BASE}\nUSER app\nWORKDIR /srv/owned\n"),
    _case("workdir-then-copy-run", "FROM {BASE}\nWORKDIR /app\nCOPY a.txt .\nRUN pwd > where\n", SMALL),
    _case("workdir-through-symlink", "FROM {BASE}\nRUN mkdir /real && ln -s /real /link && ln -s /nowhere /dangling\n"
          "WORKDIR /link\nRUN touch here\nWORKDIR /dangling/sub\n"),
    _case("workdir-relative-first", "FROM {BASE}\nWORKDIR rel\nRUN pwd > /pwd\n"),
    _case("workdir-env", "FROM {BASE}\nENV ROOT=/data\nWORKDIR $ROOT/sub\nRUN touch here\n"),
    # --- COPY / ADD ------------------------------------------------------------------------------
    _case("copy-files", "FROM {BASE}\nCOPY a.txt b.txt /dest/\nCOPY a.txt /renamed\nCOPY c.md /new/dir/\n", SMALL),
    _case("copy-dir", "FROM {BASE}\nCOPY src /contents\nCOPY src/ /contents-slash/\nCOPY . /all/\n", TREE),
    _case("copy-wildcards", "FROM {BASE}\nCOPY *.txt /txt/\nCOPY [ab].txt ?.md /mixed/\nCOPY sr* /glob/\n",
          {**SMALL, **TREE}),
    _case("copy-wildcard-to-file", "FROM {BASE}\nCOPY *.txt /one\n", SMALL),
    _case("copy-wildcard-no-match", "FROM {BASE}\nCOPY *.none a.txt /single\nCOPY *.nothing /empty-dest\n",
          SMALL),
    _case("copy-chown", "FROM {BASE}\nCOPY --chown=app:staff a.txt /by-names\nCOPY --chown=1000 b.txt /by-uid\n"
          "COPY --chown=4242:4343 src /numeric/\nCOPY --chown=app src /by-user/\n", {**SMALL, **TREE}),
    _case("copy-chmod", "FROM {BASE}\nCOPY --chmod=600 a.txt /private\nCOPY --chmod=755 src /exec/\n",
          {**SMALL, **TREE}),
    _case("copy-modes-owners", "FROM {BASE}\nCOPY modes/ /modes/\n", {
        "modes/setuid": File("s\n", 0o4755), "modes/sticky": Dir(0o1777), "modes/none": File("n\n", 0o000),
        "modes/owned": File("o\n", 0o640, owner=(1234, 5678)),
    }),
    _case("copy-symlinks-in-dir", "FROM {BASE}\nCOPY links/ /links/\n", {
        "links/target.txt": "target\n", "links/rel": Symlink("target.txt"), "links/abs": Symlink("/etc/passwd"),
        "links/dangling": Symlink("nowhere"), "links/up": Symlink("../outside"),
    }),
    _case("copy-symlink-source", "FROM {BASE} AS src\nRUN echo data > /data && ln -s /data /link\n"
          "FROM {BASE}\nCOPY link.txt /followed\nCOPY linkdir /linkdir/\nCOPY --from=src /link /from-stage\n", {
              "real.txt": "real\n", "link.txt": Symlink("real.txt"), "realdir/f": "f\n", "linkdir": Symlink("realdir"),
          }),
    _case("copy-hardlinks", "FROM {BASE}\nCOPY hl/ /hl/\n", {
        "hl/one": "same inode\n", "hl/two": HardLink("hl/one"), "hl/sub/three": HardLink("hl/one"),
    }),
    _case("copy-onto-symlink-dir", "FROM {BASE}\nRUN mkdir /real && ln -s /real /link\nCOPY src/ /link/\n", TREE),
    _case("copy-tree-over-symlink", "FROM {BASE}\nRUN mkdir /real && echo keep > /real/keep && ln -s /real /link\n"
          "COPY tree/ /\n", {"tree/link/sub/f": "f\n"}),
    _case("copy-over-existing", "FROM {BASE}\nRUN mkdir -p /t/dir && echo old > /t/file && echo keep > /t/dir/keep\n"
          "COPY a.txt /t/file\nCOPY src/ /t/dir/\n", {**SMALL, **TREE}),
    _case("dockerignore", "FROM {BASE}\nCOPY . /ctx/\n", {
        ".dockerignore": "*.log\n!keep.log\nsecret/\n**/*.tmp\nDockerfile\n.dockerignore\n",
        "a.log": "a\n", "keep.log": "k\n", "secret/key": "k\n", "sub/x.tmp": "t\n", "sub/y.txt": "y\n", "top.tmp": "t\n",
    }),
    _case("dockerignore-dir-exception", "FROM {BASE}\nCOPY . /ctx/\n", {
        ".dockerignore": "docs\n!docs/keep.md\nbuild/**\n!build/out/**\n", "docs/keep.md": "k\n", "docs/drop.md": "d\n",
        "build/tmp/x": "x\n", "build/out/y": "y\n",
    }),
    _case("dockerignore-wildcard-exception", "FROM {BASE}\nCOPY . /ctx/\n", {
        ".dockerignore": "vendor\n!**/keep.txt\nlogs/*\n!*/sub*\n", "vendor/keep.txt": "k\n", "vendor/drop.txt": "d\n",
        "logs/subdir/a": "a\n", "logs/other": "o\n", "keep.txt": "top\n",
    }),
    _case("add-file-and-rename", "FROM {BASE}\nADD a.txt /added/\nADD b.txt /added-b\n", SMALL),
    _case("add-tar", "FROM {BASE}\nADD plain.tar /plain/\nADD packed.tar.gz /packed\nADD notatar.tar /notatar/\n", {
        "plain.tar": Tar((
            TarMember("dir/", kind=tarfile.DIRTYPE, mode=0o750, owner=(1000, 1000)),
            TarMember("dir/file", b"file\n", mode=0o640, owner=(1000, 50)),
            TarMember("dir/link", kind=tarfile.SYMTYPE, linkname="file"),
            TarMember("dir/hard", kind=tarfile.LNKTYPE, linkname="dir/file", mode=0o640, owner=(1000, 50)),
            TarMember("exec", b"#!/bin/sh\n", mode=0o4755),
        )),
        "packed.tar.gz": Tar((TarMember("inner/gz.txt", b"gz\n"),), compression="gz"),
        "notatar.tar": "just text, not an archive\n",
    }),
    _case("add-tar-chown-chmod", "FROM {BASE}\nADD --chown=1000:50 t.tar /owned/\nADD --chown=app a.txt /a-owned\n"
          "ADD --chmod=700 b.txt /b-private\n", {
              **SMALL, "t.tar": Tar((TarMember("d/", kind=tarfile.DIRTYPE, mode=0o750, owner=(7, 7)),
                                     TarMember("d/f", b"f\n", owner=(8, 8)))),
          }),
    _case("add-tar-hardlink-header", "FROM {BASE}\nADD hl.tar /hl/\n", {
        "hl.tar": Tar((
            TarMember("file", b"file\n", mode=0o640, owner=(1000, 50)),
            TarMember("hard", kind=tarfile.LNKTYPE, linkname="file", mode=0o600, owner=(0, 0)),
        )),
    }),
    _case("add-tar-over-symlink", "FROM {BASE}\nRUN mkdir /real && echo keep > /real/keep && ln -s /real /link\n"
          "ADD t.tar /\n", {
              "t.tar": Tar((TarMember("link/", kind=tarfile.DIRTYPE, mode=0o755), TarMember("link/f", b"f\n"))),
          }),
    _case("add-tar-edge-entries", "FROM {BASE}\nADD edge.tar /edge/\n", {
        "edge.tar": Tar((
            TarMember("", b"no name\n"),
            TarMember("ok.txt", b"ok\n"),
            TarMember("up", kind=tarfile.SYMTYPE, linkname=".."),
            TarMember("up/etc/f", b"through the link\n"),
        )),
    }),
    _case("add-tar-xattrs", "FROM {BASE}\nADD x.tar /x/\n", {
        "x.tar": Tar((TarMember("with-xattr", b"x\n", xattrs=(("user.comment", "hello"),)),)),
    }),
    # --- RUN -------------------------------------------------------------------------------------
    _case("run-forms", "FROM {BASE}\nRUN echo shell > /shell\nRUN [\"/bin/sh\", \"-c\", \"echo exec > /exec\"]\n"
          "RUN [\"touch\", \"/touched\"]\nRUN echo one \\\n  two > /continued\n"),
    _case("run-on-scratch", "FROM scratch\nCOPY --from={BASE} /bin/busybox /busybox\n"
          "RUN [\"/busybox\", \"touch\", \"/made\"]\n"),
    _case("run-whiteouts", "FROM {BASE}\nRUN rm /etc/group && rm -r /home/app && rm /bin/vi\n"),
    _case("run-replace", "FROM {BASE}\nRUN mkdir -p /r/dir/sub && echo f > /r/dir/sub/f && echo x > /r/file"
          " && ln -s /r /r/link\nRUN rm -rf /r/dir && mkdir /r/dir && echo new > /r/dir/new"
          " && rm /r/file && mkdir /r/file && rm /r/link && echo nolink > /r/link\n"),
    _case("run-special-files", "FROM {BASE}\nRUN mkfifo /fifo && echo a > /h1 && ln /h1 /h2 && ln -s h1 /s1"
          " && chmod 4750 /h1 && chown 1000:50 /h2 && mkdir -m 1777 /shared && umask 077 && touch /private\n"),
    _case("run-env-visible", "FROM {BASE}\nARG BUILD_ONLY=secret-ish\nENV KEPT=kept\n"
          "RUN env | grep -E '^(BUILD_ONLY|KEPT|PATH)=' | sort > /env-seen\n"),
    _case("run-mount-cache", "FROM {BASE}\nRUN --mount=type=cache,target=/cache echo x > /cache/x && ls /cache > /seen\n"),
    _case("run-mount-cache-owners", "FROM {BASE}\n"
          # stat and ls -a, not ls -l: a listing with times would differ between any two builds
          "RUN --mount=type=cache,id=c,target=/c,uid=1000,gid=1000,mode=0700 touch /c/a"
          " && stat -c '%n %a %u:%g' /c /c/a > /one\n"
          "RUN --mount=type=cache,id=c,target=/c stat -c '%n %a %u:%g' /c > /two && ls -a /c >> /two\n"),
    _case("run-mount-bind", "FROM {BASE}\nRUN --mount=type=bind,target=/ctx cp /ctx/a.txt /copied\n"
          "RUN --mount=type=bind,source=src,target=/mnt/src ls /mnt/src > /listed\n", {**SMALL, **TREE}),
    _case("run-mount-from-stage", "FROM {BASE} AS data\nRUN echo shared > /shared\n"
          "FROM {BASE}\nRUN --mount=type=bind,from=data,source=/shared,target=/in cat /in > /out\n"),
    _case("run-mount-tmpfs", "FROM {BASE}\nRUN --mount=type=tmpfs,target=/scratch touch /scratch/gone && echo ok > /ok\n"),
    _case("run-mount-secret", "FROM {BASE}\nRUN --mount=type=secret,id=token cat /run/secrets/token > /copied\n"
          "RUN --mount=type=secret,id=token,target=/tok wc -c < /tok > /size\n",
          {"token.txt": "s3cret\n"}, secrets={"token": "token.txt"}),
    _case("run-mount-root-scratch", "FROM scratch AS files\nCOPY a.txt /\nFROM {BASE}\n"
          "RUN --mount=type=bind,from=files,target=/files cp /files/a.txt /got\n", SMALL),
    # --- SHELL, CMD, ENTRYPOINT ------------------------------------------------------------------
    _case("shell", "FROM {BASE}\nSHELL [\"/bin/sh\", \"-e\", \"-c\"]\nRUN echo \"$0\" > /shell0\nCMD echo shell-form\n"),
    _case("cmd-forms", "FROM {BASE}\nCMD [\"echo\", \"exec\"]\nCMD echo shell form\n"),
    _case("cmd-exec-only", "FROM {BASE}\nCMD [\"/bin/echo\", \"a b\", \"c\"]\n"),
    _case("entrypoint-clears-cmd", "FROM {BASE}\nENTRYPOINT [\"/bin/echo\"]\n"),
    _case("entrypoint-shell-and-cmd", "FROM {BASE}\nENTRYPOINT echo entry\nCMD [\"ignored\"]\n"),
    _case("entrypoint-json-comment", "FROM {BASE}\nENTRYPOINT [\"/bin/echo\", \"x\"] # a comment\n"),
    _case("cmd-not-json", "FROM {BASE}\nCMD [not json]\n"),
    # --- EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK, ONBUILD ----------------------------------------
    _case("expose", "FROM {BASE}\nARG PORT=9000\nEXPOSE 80 443/tcp 53/udp $PORT\nEXPOSE 8000-8002\n"),
    _case("volume", "FROM {BASE}\nRUN mkdir /data\nVOLUME /data\nVOLUME [\"/a\", \"/b\"]\nVOLUME /c /d\n"
          "RUN echo kept > /data/file\n"),
    _case("stopsignal", "FROM {BASE}\nSTOPSIGNAL SIGKILL\n"),
    _case("stopsignal-number", "FROM {BASE}\nARG SIG=9\nSTOPSIGNAL $SIG\n"),
    _case("healthcheck", "FROM {BASE}\nHEALTHCHECK --interval=5s --timeout=3s --start-period=1s --retries=2 "
          "CMD wget -q localhost || exit 1\n"),
    _case("healthcheck-exec", "FROM {BASE}\nHEALTHCHECK CMD [\"/bin/true\"]\n"),
    _case("healthcheck-none", "FROM {BASE}\nHEALTHCHECK CMD true\nHEALTHCHECK NONE\n"),
    _case("healthcheck-none-flags", "FROM {BASE}\nHEALTHCHECK --interval=5s NONE\n"),
    _case("onbuild-recorded", "FROM {BASE}\nONBUILD RUN echo triggered > /triggered\nONBUILD COPY a.txt /\n", SMALL),
    _case("onbuild-triggered", "FROM {BASE} AS parent\nONBUILD RUN echo triggered > /triggered\n"
          "FROM parent\nRUN test -f /triggered && echo child > /child\n"),
    # --- parser ----------------------------------------------------------------------------------
    _case("parser-escape-directive", "# escape=`\nFROM {BASE}\nRUN echo one `\n  two > /joined\n"
          "RUN echo back\\slash > /backslash\n"),
    _case("parser-comments-continuations", "FROM {BASE}\n# comment\nRUN echo a \\\n# comment inside\n  b > /ab\n"
          "\n\nLABEL x=1 \\\n      y=2\n"),
    _case("parser-double-dash", "FROM {BASE}\nCOPY -- a.txt /dashed\nRUN -- echo hi > /hi\n", SMALL),
    _case("parser-double-escape", "FROM {BASE}\nENV C x\\\\\nENV D y\n"),
    _case("parser-empty-file", "# only a comment\n"),
    _case("parser-lowercase-instructions", "from {BASE}\nrun echo lower > /lower\nenv K=v\ncopy a.txt /\n", SMALL),
)
