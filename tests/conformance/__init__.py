"""Differential conformance suite: our builder against BuildKit (dockerd with DOCKER_BUILDKIT=1).

Each case (cases.py) is built both ways from byte-identical base images and the final images are
compared (compare.py); known_differences.toml lists the differences tolerated and why. Run it with
pytest (tests/conformance/test_conformance.py, skipped without root and dockerd) or as
`python -m tests.conformance` for the table. docs/CONFORMANCE.md has the details.
"""
