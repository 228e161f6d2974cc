import pytest

from builder.image.reference import InvalidReference, normalize_tag, parse_reference


@pytest.mark.parametrize("ref, registry, repository, tag, digest, familiar", [
    ("alpine", "docker.io", "library/alpine", None, None, "alpine"),
    ("alpine:3.19", "docker.io", "library/alpine", "3.19", None, "alpine:3.19"),
    ("docker.io/library/alpine:3.19", "docker.io", "library/alpine", "3.19", None, "alpine:3.19"),
    ("index.docker.io/library/alpine", "docker.io", "library/alpine", None, None, "alpine"),
    ("user/app", "docker.io", "user/app", None, None, "user/app"),
    ("docker.io/user/app:v1", "docker.io", "user/app", "v1", None, "user/app:v1"),
    ("localhost/app", "localhost", "app", None, None, "localhost/app"),
    ("localhost:5000/app:1.0", "localhost:5000", "app", "1.0", None, "localhost:5000/app:1.0"),
    ("127.0.0.1:5000/a/b/c:x", "127.0.0.1:5000", "a/b/c", "x", None, "127.0.0.1:5000/a/b/c:x"),
    ("ghcr.io/org/tool", "ghcr.io", "org/tool", None, None, "ghcr.io/org/tool"),
    ("app@sha256:" + "a" * 64, "docker.io", "library/app", None, "sha256:" + "a" * 64, "app@sha256:" + "a" * 64),
    ("a.b/c:t@sha256:" + "b" * 64, "a.b", "c", "t", "sha256:" + "b" * 64, "a.b/c:t@sha256:" + "b" * 64),
    ("my_app-x.y__z", "docker.io", "library/my_app-x.y__z", None, None, "my_app-x.y__z"),
])
def test_parse_reference(ref, registry, repository, tag, digest, familiar):
    parsed = parse_reference(ref)
    assert (parsed.registry, parsed.repository, parsed.tag, parsed.digest) == (registry, repository, tag, digest)
    assert parsed.familiar() == familiar
    assert str(parsed).startswith(f"{registry}/{repository}")


@pytest.mark.parametrize("name, tag", [
    ("alpine", "alpine:latest"),
    ("alpine:latest", "alpine:latest"),
    ("docker.io/library/alpine", "alpine:latest"),
    ("library/alpine:edge", "alpine:edge"),
    ("docker.io/user/app", "user/app:latest"),
    ("localhost:5000/app", "localhost:5000/app:latest"),
    ("Registry.Example.com/app:V1", "Registry.Example.com/app:V1"),
])
def test_normalize_tag(name, tag):
    assert normalize_tag(name) == tag


@pytest.mark.parametrize("bad", [
    "", "Alpine", "app:", "app:-x", "/app", "app/", "a//b", "app@sha256:xyz", "app:" + "x" * 129,
    "-app", "app!", "host:port/app",
])
def test_invalid_references(bad):
    with pytest.raises(InvalidReference) as info:
        parse_reference(bad)
    assert info.value.render().startswith("error: ")


def test_uppercase_hint_and_digest_is_not_a_tag():
    with pytest.raises(InvalidReference) as info:
        parse_reference("MyApp")
    assert "lowercase" in (info.value.hint or "")
    with pytest.raises(InvalidReference):
        normalize_tag("app@sha256:" + "c" * 64)
