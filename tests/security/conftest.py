"""Fixtures of the security tests (a fixture is registered by being importable from here)."""
from security.sandbox_support import probe_layer  # noqa: F401
