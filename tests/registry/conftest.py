"""Session-scoped real registries: plain, htpasswd basic auth, and token auth behind a token server."""
from __future__ import annotations

import shutil

import pytest
from registry_helpers import REGISTRY_BIN, FaultProxy, RegistryServer, TokenServer, htpasswd_auth

if not shutil.which(REGISTRY_BIN):
    pytest.skip("docker-registry is not installed", allow_module_level=True)


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    server = RegistryServer(tmp_path_factory.mktemp("registry-plain")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("registry-basic")
    server = RegistryServer(workdir, htpasswd_auth(workdir)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_server(tmp_path_factory):
    server = TokenServer(tmp_path_factory.mktemp("token-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory, token_server):
    server = RegistryServer(tmp_path_factory.mktemp("registry-token"), token_server.auth_yaml()).start()
    yield server
    server.stop()


@pytest.fixture
def fault_proxy(registry):
    proxy = FaultProxy(registry.port)
    yield proxy
    proxy.stop()


@pytest.fixture(autouse=True)
def isolated_docker_config(tmp_path, monkeypatch):
    """Each test gets its own empty $DOCKER_CONFIG; tests that need credentials write one."""
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    return config_dir
