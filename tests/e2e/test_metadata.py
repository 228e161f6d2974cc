"""Metadata instructions: the image config and history they produce (snapshots, reviewed)."""
from __future__ import annotations

import json
from pathlib import Path

from helpers import write_context

import builder

METADATA_BUILDFILE = """\
FROM scratch AS base
MAINTAINER Jane Doe <jane@example.com>
ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8
ENV LEGACY value with spaces
LABEL org.example.version="1.0" "quoted key"=yes
EXPOSE 80 443/tcp 53/udp 8000-8002
VOLUME ["/data", "/logs"]
VOLUME /cache
USER 1000:1000
WORKDIR /srv
WORKDIR app
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --timeout=1m30s --start-period=5s --retries=3 CMD curl -f http://localhost/ || exit 1
SHELL ["/bin/bash", "-eu", "-c"]
CMD echo "$LANG"
ENTRYPOINT ["/entry"]
ONBUILD COPY onbuild.txt /from-onbuild.txt
"""


def test_metadata_config_and_manifest(tmp_path: Path, snapshot) -> None:
    context = write_context(tmp_path / "ctx", {"Buildfile": METADATA_BUILDFILE})
    result = builder.build(context, root=tmp_path / "s", source_date_epoch=1700000000, platform="linux/amd64")
    assert json.dumps(result.config, indent=2, sort_keys=True) == snapshot(name="config")
    assert json.dumps(result.manifest, indent=2, sort_keys=True) == snapshot(name="manifest")


def test_entrypoint_resets_an_inherited_cmd_but_not_its_own(tmp_path: Path) -> None:
    text = "FROM scratch AS base\nCMD [\"base-cmd\"]\nFROM base AS child\nENTRYPOINT [\"/e\"]\nFROM base\nCMD [\"own\"]\nENTRYPOINT [\"/e\"]\n"
    context = write_context(tmp_path / "ctx", {"Buildfile": text})
    child = builder.build(context, root=tmp_path / "s", target="child")
    assert "Cmd" not in child.config["config"]
    final = builder.build(context, root=tmp_path / "s")
    assert final.config["config"]["Cmd"] == ["own"] and final.config["config"]["Entrypoint"] == ["/e"]


def test_onbuild_triggers_run_in_the_child_and_are_not_inherited(tmp_path: Path) -> None:
    store = tmp_path / "s"
    parent = write_context(tmp_path / "parent", {"Buildfile": "FROM scratch\nONBUILD COPY marker.txt /marker.txt\n"})
    builder.build(parent, root=store, tags=["with-trigger"])
    child = write_context(tmp_path / "child", {"Buildfile": "FROM with-trigger\nLABEL child=1\n", "marker.txt": "from child context\n"})
    out = tmp_path / "out"
    result = builder.build(child, root=store, outputs=[f"type=local,dest={out}"])
    assert (out / "marker.txt").read_text() == "from child context\n"
    assert "OnBuild" not in result.config["config"]
    assert any(entry["created_by"].startswith("COPY marker.txt") for entry in result.config["history"])


def test_healthcheck_durations_parse_once_and_zero_means_default(tmp_path) -> None:
    """One duration parser: what the parser accepts the build stores (`.5s` too); 0 is left out
    as Docker's omitempty leaves it."""
    import builder

    context = tmp_path / "ctx"
    context.mkdir()
    text = ("FROM scratch\nHEALTHCHECK --interval=.5s --timeout=1m0.25s --start-period=0 --retries=0 CMD true\n")
    result = builder.build(context, buildfile_text=text, root=tmp_path / "store")
    assert result.config["config"]["Healthcheck"] == {
        "Test": ["CMD-SHELL", "true"], "Interval": 500_000_000, "Timeout": 60_250_000_000}
