"""One Platform for FROM --platform, --platform, pulls and archives: same parsing, same names."""
from __future__ import annotations

import pytest

from builder.api import plan as plan_buildfile
from builder.errors import PlanError
from builder.plan.platforms import platform_args
from builder.platforms import Platform
from builder.registry.platform import select_manifest


@pytest.mark.parametrize("text, expected", [
    ("linux/amd64", "linux/amd64"),
    ("linux/ARM64", "linux/arm64"),
    ("LINUX/x86_64", "linux/amd64"),
    ("arm64", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64"),
    ("linux/arm/7", "linux/arm/v7"),
    ("linux/aarch64", "linux/arm64"),
    ("linux/arm/v6", "linux/arm/v6"),
])
def test_parse_normalises_like_containerd(text: str, expected: str) -> None:
    assert str(Platform.parse(text)) == expected


@pytest.mark.parametrize("text", ["", "linux/", "/amd64", "a/b/c/d", "linux//v7", "linux/amd 64", "linux/$ARCH",
                                  "linux/amd64,linux/arm64"])
def test_malformed_platforms_are_plan_errors(text: str) -> None:
    with pytest.raises(PlanError):
        Platform.parse(text)


def test_matching_ignores_a_variant_only_one_side_names() -> None:
    assert Platform.parse("linux/arm/v7").matches(Platform("linux", "arm"))
    assert not Platform.parse("linux/arm/v7").matches(Platform.parse("linux/arm/v6"))
    assert not Platform.parse("linux/amd64").matches(Platform.parse("linux/arm64"))


def test_target_args_are_the_normalised_names(tmp_path) -> None:
    plan = plan_buildfile(tmp_path, buildfile_text="FROM --platform=linux/ARM64 scratch\n", platform="ARM64")
    assert plan.target_platform == Platform("linux", "arm64")
    assert platform_args(plan.build_platform, plan.target_platform)["TARGETPLATFORM"] == "linux/arm64"
    assert plan.stages[0].platform == Platform("linux", "arm64")


def test_an_index_entry_is_chosen_by_the_same_rules() -> None:
    index = {"manifests": [
        {"digest": "sha256:" + "a" * 64, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "sha256:" + "b" * 64, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:" + "c" * 64, "platform": {"os": "unknown", "architecture": "unknown"}},
    ]}
    assert select_manifest(index, Platform.parse("ARM64"), "x")["digest"] == "sha256:" + "a" * 64
    assert select_manifest(index, Platform.parse("linux/x86_64"), "x")["digest"] == "sha256:" + "b" * 64


def test_a_list_of_platforms_is_refused_not_mangled(tmp_path) -> None:
    with pytest.raises(PlanError) as caught:
        plan_buildfile(tmp_path, buildfile_text="FROM scratch\n", platform="linux/amd64,linux/arm64")
    assert "one platform per build" in caught.value.message
    assert "build each with its own --platform" in caught.value.hint
