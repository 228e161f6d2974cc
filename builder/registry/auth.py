"""Registry authentication: docker config credentials, challenges, bearer tokens.

Credentials come from `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`):
`auths.<host>.auth` (base64 "user:password") or `username`/`password`, and credential helpers
(`credHelpers.<host>` or the global `credsStore`) run as `docker-credential-<name> get`.

The registry tells which scheme it wants in a 401's `WWW-Authenticate` header: `Basic` (send
the credentials on every request) or `Bearer realm=,service=,scope=` (ask the realm for a token
for the scopes, with the credentials if any, and send the token). Tokens are cached per set of
scopes until they expire.
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from builder.errors import RegistryError

from .transport import Transport, uses_plain_http

DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
TOKEN_LIMIT = 1 << 20
DEFAULT_TOKEN_LIFETIME = 60


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    # An OAuth2 refresh token (`identitytoken` in the config, or a helper's `<token>` user):
    # exchanged at the realm with a POST instead of sending user and password.
    identity_token: str | None = None

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def docker_config_path() -> Path:
    """Where docker keeps its client config, honouring $DOCKER_CONFIG like the docker CLI."""
    directory = os.environ.get("DOCKER_CONFIG")
    base = Path(directory) if directory else Path.home() / ".docker"
    return base / "config.json"


def _config_key_host(key: str) -> str:
    """An `auths` key may be `host`, `https://host`, `https://host/v1/`: reduce it to the host."""
    if "://" in key:
        key = urllib.parse.urlsplit(key).netloc
    return key.split("/", 1)[0]


def _canonical_host(host: str) -> str:
    return "docker.io" if host in DOCKER_HUB_HOSTS else host


def load_docker_config(path: Path | None = None) -> dict:
    path = path or docker_config_path()
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read docker config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"docker config {path} is not a JSON object")
    return data


def _run_helper(helper: str, server: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        result = subprocess.run(
            [program, "get"], input=server.encode(), capture_output=True, timeout=60, check=False
        )
    except FileNotFoundError:
        raise RegistryError(
            f"credential helper {program} is not installed",
            hint=f"install it or remove it from {docker_config_path()}",
        ) from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(f"credential helper {program} failed: {exc}") from exc
    if result.returncode != 0:
        message = result.stdout.decode(errors="replace").strip() + result.stderr.decode(errors="replace").strip()
        if "credentials not found" in message.lower():
            return None
        raise RegistryError(f"credential helper {program} failed for {server}: {message or result.returncode}")
    try:
        answer = json.loads(result.stdout)
        username, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"credential helper {program} gave an unreadable answer: {exc}") from exc
    if username == "<token>":
        return Credentials("", "", identity_token=secret)
    return Credentials(username, secret)


def _decode_auth_entry(entry: dict, key: str) -> Credentials | None:
    if entry.get("identitytoken"):
        return Credentials(str(entry.get("username") or ""), "", identity_token=str(entry["identitytoken"]))
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"], validate=False).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryError(f"docker config: invalid base64 in auths[{key!r}].auth") from exc
        username, sep, password = decoded.partition(":")
        if not sep:
            raise RegistryError(f"docker config: auths[{key!r}].auth is not base64 of user:password")
        return Credentials(username, password)
    if entry.get("username") is not None and entry.get("password") is not None:
        return Credentials(str(entry["username"]), str(entry["password"]))
    return None


def lookup_credentials(registry: str, config: dict | None = None) -> Credentials | None:
    """The credentials docker would use for `registry` (a host[:port]), or None (anonymous)."""
    config = load_docker_config() if config is None else config
    host = _canonical_host(registry)
    server = DOCKER_HUB_CONFIG_KEY if host == "docker.io" else host
    helpers = config.get("credHelpers") or {}
    for key, helper in helpers.items():
        if _canonical_host(_config_key_host(key)) == host:
            return _run_helper(helper, server)
    auths = config.get("auths") or {}
    for key, entry in auths.items():
        if _canonical_host(_config_key_host(key)) == host and isinstance(entry, dict):
            found = _decode_auth_entry(entry, key)
            if found:
                return found
    if config.get("credsStore"):
        return _run_helper(config["credsStore"], server)
    return None


_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic" or "bearer"
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge:
    """Parse `Bearer realm="https://x/token",service="reg",scope="repository:a:pull"`."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for match in _CHALLENGE_PARAM.finditer(rest):
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match.group(1).lower()] = value
    return Challenge(scheme.lower(), params)


@dataclass
class _Token:
    value: str
    expires_at: float


@dataclass
class Authenticator:
    """Gives the Authorization header for a set of scopes on one registry."""

    registry: str
    # Credentials, or a callable giving them: looked up only when a registry asks for a login,
    # so anonymous registries never run a credential helper.
    credentials_source: Credentials | None | Callable[[], Credentials | None]
    insecure: tuple[str, ...] = ()
    challenge: Challenge | None = None
    token_requests: int = 0  # counted so tests can see the cache working
    _tokens: dict[tuple[str, ...], _Token] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loaded: bool = False
    _credentials: Credentials | None = None

    @property
    def credentials(self) -> Credentials | None:
        if not self._loaded:
            source = self.credentials_source
            self._credentials = source() if callable(source) else source
            self._loaded = True
        return self._credentials

    def learn(self, www_authenticate: str | None) -> Challenge:
        if not www_authenticate:
            raise RegistryError(f"registry {self.registry} answered 401 without a WWW-Authenticate challenge")
        challenge = parse_challenge(www_authenticate)
        if challenge.scheme not in ("basic", "bearer"):
            raise RegistryError(f"registry {self.registry} asks for unsupported auth scheme {challenge.scheme!r}")
        self.challenge = challenge
        return challenge

    def header(self, scopes: Iterable[str], *, refresh: bool = False) -> str | None:
        """The Authorization value to send, or None before any challenge (anonymous first)."""
        if self.challenge is None:
            return None
        if self.challenge.scheme == "basic":
            if self.credentials is None or self.credentials.identity_token:
                raise RegistryError(
                    f"registry {self.registry} requires a login",
                    hint=f"add credentials for {self.registry} to {docker_config_path()}",
                )
            return self.credentials.basic_header()
        key = tuple(sorted(set(scopes)))
        with self._lock:
            cached = self._tokens.get(key)
            if cached and not refresh and cached.expires_at > time.time():
                return "Bearer " + cached.value
            token = self._fetch_token(key)
            self._tokens[key] = token
            return "Bearer " + token.value

    def _fetch_token(self, scopes: tuple[str, ...]) -> _Token:
        assert self.challenge is not None
        realm = self.challenge.params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.registry}: bearer challenge without a realm")
        service = self.challenge.params.get("service")
        realm_parts = urllib.parse.urlsplit(realm)
        creds = self.credentials
        if (
            creds is not None
            and realm_parts.scheme == "http"
            and not uses_plain_http(realm_parts.netloc, self.insecure)
            and not uses_plain_http(self.registry, self.insecure)
        ):
            raise RegistryError(f"registry {self.registry} wants credentials sent to plain-HTTP realm {realm}")
        transport = Transport(realm_parts.netloc, plain_http=realm_parts.scheme == "http")
        headers = {"Accept": "application/json"}
        self.token_requests += 1
        if creds is not None and creds.identity_token:
            # OAuth2 refresh-token grant, as the docker CLI does with an identity token.
            form = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token),
                    ("client_id", "builder"), ("scope", " ".join(scopes))]
            if service:
                form.append(("service", service))
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            response = transport.request("POST", realm, headers, urllib.parse.urlencode(form).encode(), retry=True)
        else:
            query: list[tuple[str, str]] = [("service", service)] if service else []
            query.extend(("scope", scope) for scope in scopes)
            url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
            if creds is not None:
                headers["Authorization"] = creds.basic_header()
            response = transport.request("GET", url, headers)
        with response:
            body = response.read_limited(TOKEN_LIMIT, "token answer")
            if response.status in (401, 403):
                hint = (
                    f"check the credentials for {self.registry} in {docker_config_path()}"
                    if creds
                    else f"log in: add credentials for {self.registry} to {docker_config_path()}"
                )
                raise RegistryError(
                    f"token server {realm_parts.netloc} refused access to {', '.join(scopes) or 'the registry'}"
                    f" (HTTP {response.status})",
                    hint=hint,
                )
            if response.status != 200:
                raise RegistryError(f"token server {realm} answered HTTP {response.status}")
        try:
            answer = json.loads(body)
            value = answer.get("token") or answer.get("access_token")
            lifetime = int(answer.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError) as exc:
            raise RegistryError(f"token server {realm} gave an unreadable answer: {exc}") from exc
        if not isinstance(value, str) or not value:
            raise RegistryError(f"token server {realm} gave no token")
        # Renew a little early so a token does not expire between check and use.
        return _Token(value, time.time() + max(lifetime - 10, 1))

