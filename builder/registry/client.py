"""OCI distribution spec client for one registry: manifests, blobs, uploads, mounts.

`RegistryClient` speaks the protocol; `pull` and `push` (bottom of this file, logic in
pulling.py / pushing.py) move images between a registry and the local store.

Every blob read is checked against its digest and size while it streams; a manifest is read
whole but never more than 4 MiB. Authentication is discovered with a `GET /v2/` ping and then
sent up front for each request's scopes (see auth.py), to the registry only: an upload Location
on another scheme, host or port (blob storage) gets no credentials, as with Docker's client.
"""
from __future__ import annotations

import hashlib
import json
import urllib.parse
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Protocol

from builder.errors import RegistryError

from . import mediatypes
from .auth import DOCKER_HUB_HOSTS, Authenticator, Credentials, lookup_credentials
from .transport import Response, TransientError, Transport, is_listed_insecure, is_loopback, same_origin

MANIFEST_LIMIT = 4 * 1024 * 1024
ERROR_BODY_LIMIT = 64 * 1024
DEFAULT_CHUNK_SIZE = 0  # 0: monolithic uploads; a positive size switches to chunked PATCH uploads
_USE_DOCKER_CONFIG = object()


class BlobSink(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as the registry sent it."""

    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict:
        try:
            parsed = json.loads(self.data)
        except ValueError as exc:
            raise RegistryError(f"manifest {self.digest} is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise RegistryError(f"manifest {self.digest} is not a JSON object")
        return parsed


def new_hasher(digest: str):
    algorithm, _, hex_value = digest.partition(":")
    if algorithm not in ("sha256", "sha512") or not hex_value:
        raise RegistryError(f"unsupported or malformed digest {digest!r}")
    return hashlib.new(algorithm)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def registry_host(registry: str) -> str:
    """The host to talk to: Docker Hub's API lives on registry-1.docker.io."""
    return "registry-1.docker.io" if registry in DOCKER_HUB_HOSTS else registry


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


class RegistryClient:
    """Talks the distribution API to one registry (host[:port])."""

    def __init__(
        self,
        registry: str,
        *,
        insecure: Iterable[str] = (),
        credentials: Credentials | None | object = _USE_DOCKER_CONFIG,
        retries: int = 3,
        backoff: float = 0.2,
        timeout: float = 60.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.registry = registry
        self.insecure = tuple(insecure)
        host = registry_host(registry)
        self.transport = Transport(
            host,
            plain_http=is_loopback(host),
            insecure_tls=not is_loopback(host) and is_listed_insecure(host, self.insecure),
            retries=retries,
            backoff=backoff,
            timeout=timeout,
        )
        source = (lambda: lookup_credentials(registry)) if credentials is _USE_DOCKER_CONFIG else credentials
        self.auth = Authenticator(registry, source, self.insecure)  # type: ignore[arg-type]
        self.chunk_size = chunk_size
        self._pinged = False

    # -- plumbing ------------------------------------------------------------------------------

    def _ping(self) -> None:
        """`GET /v2/` once: checks this is a v2 registry and learns its auth challenge."""
        if self._pinged:
            return
        with self.transport.request("GET", "/v2/", {}) as response:
            response.drain()
            if response.status == 401:
                self.auth.learn(response.header("WWW-Authenticate"))
            elif response.status == 404:
                raise RegistryError(f"{self.registry} does not speak the registry v2 API (GET /v2/ gave 404)")
            elif response.status >= 400:
                raise RegistryError(f"registry {self.registry}: GET /v2/ answered HTTP {response.status}")
        self._pinged = True

    def request(
        self,
        method: str,
        path: str,
        scopes: Iterable[str],
        headers: dict[str, str] | None = None,
        body: bytes | Callable[[], BinaryIO] | None = None,
        content_length: int | None = None,
        *,
        retry: bool | None = None,
    ) -> Response:
        """One authenticated request; a 401 renews the token (once) with the challenge's scope.

        `path` may be a full URL (an upload Location): one on another origin than the registry is
        sent without credentials, and its 401 is its own answer, not a reason to send them."""
        self._ping()
        scopes = list(scopes)
        send = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        if "://" in path and not same_origin(path, self.transport.base_url):
            return self.transport.request(method, path, send, body, content_length, retry=retry)
        authorization = self.auth.header(scopes)
        if authorization:
            send["Authorization"] = authorization
        response = self.transport.request(method, path, send, body, content_length, retry=retry)
        if response.status != 401:
            return response
        challenge_header = response.header("WWW-Authenticate")
        response.drain()
        response.close()
        challenge = self.auth.learn(challenge_header)
        if challenge.params.get("scope"):
            scopes.extend(challenge.params["scope"].split(" "))
        send["Authorization"] = self.auth.header(scopes, refresh=True) or ""
        response = self.transport.request(method, path, send, body, content_length, retry=retry)
        if response.status == 401:
            response.drain()
            response.close()
            raise RegistryError(
                f"registry {self.registry} refused {method} {path}: unauthorized",
                hint="check your credentials in the docker config (docker login)",
            )
        return response

    def _error(self, response: Response, what: str) -> RegistryError:
        """A RegistryError carrying the registry's own error codes and messages."""
        detail = ""
        try:
            body = response.read_limited(ERROR_BODY_LIMIT, "error body")
            errors = json.loads(body).get("errors") or []
            detail = "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}" for e in errors if isinstance(e, dict))
        except Exception:  # a garbled error body must not hide the status
            pass
        finally:
            response.close()
        message = f"{what}: HTTP {response.status} {response.reason}"
        hint = None
        if response.status == 403:
            hint = "your credentials do not allow this; check the repository name and your access"
        return RegistryError(message + (f" ({detail})" if detail else ""), hint=hint)

    def _location(self, response: Response, what: str) -> str:
        location = response.header("Location")
        if not location:
            raise RegistryError(f"{what}: the registry gave no upload Location")
        return urllib.parse.urljoin(self.transport.base_url + "/", location)

    # -- manifests -----------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """Fetch a manifest or index by tag or digest; its digest is checked, size capped at 4 MiB."""
        path = f"/v2/{repository}/manifests/{reference}"
        what = f"manifest {self.registry}/{repository}{'@' if ':' in reference else ':'}{reference}"
        last: TransientError | None = None
        for _attempt in range(1 + self.transport.retries):
            response = self.request("GET", path, [pull_scope(repository)], {"Accept": mediatypes.MANIFEST_ACCEPT})
            if response.status == 404:
                raise self._error(response, f"{what} not found")
            if response.status != 200:
                raise self._error(response, f"cannot get {what}")
            try:
                with response:
                    data = response.read_limited(MANIFEST_LIMIT, what)
            except TransientError as exc:
                last = exc
                continue
            break
        else:
            raise RegistryError(f"cannot get {what}: {last}")
        media_type = (response.header("Content-Type") or "").split(";")[0].strip()
        if reference.startswith(("sha256:", "sha512:")):
            digest = digest_of(data, reference.split(":")[0])
            if digest != reference:
                raise RegistryError(f"{what}: the registry sent content with digest {digest}")
        else:
            digest = digest_of(data)
            announced = response.header("Docker-Content-Digest")
            if announced and announced.startswith("sha256:") and announced != digest:
                raise RegistryError(f"{what}: content has digest {digest} but the registry announced {announced}")
        manifest = Manifest(data, media_type, digest)
        body_type = manifest.json().get("mediaType")
        if isinstance(body_type, str) and body_type:
            media_type = body_type
        elif media_type not in mediatypes.IMAGE_MANIFESTS | mediatypes.INDEXES:
            # OCI allows mediaType to be absent; tell index and manifest apart by their fields.
            media_type = mediatypes.OCI_INDEX if "manifests" in manifest.json() else mediatypes.OCI_MANIFEST
        return Manifest(data, media_type, digest)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest under a tag (or its digest); returns its digest."""
        digest = digest_of(data)
        if len(data) > MANIFEST_LIMIT:
            raise RegistryError(f"manifest {digest} is larger than {MANIFEST_LIMIT} bytes")
        path = f"/v2/{repository}/manifests/{reference}"
        with self.request(
            "PUT", path, [push_scope(repository)], {"Content-Type": media_type}, data, retry=True
        ) as response:
            if response.status not in (200, 201):
                raise self._error(response, f"cannot push manifest to {self.registry}/{repository}:{reference}")
            announced = response.header("Docker-Content-Digest")
            response.drain()
        if announced and announced != digest:
            raise RegistryError(f"registry stored manifest as {announced}, expected {digest}")
        return digest

    # -- blobs ---------------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str, scopes: Iterable[str] | None = None) -> bool:
        path = f"/v2/{repository}/blobs/{digest}"
        with self.request("HEAD", path, scopes or [pull_scope(repository)]) as response:
            if response.status == 200:
                return True
            if response.status == 404:
                return False
            raise self._error(response, f"cannot check blob {digest} in {self.registry}/{repository}")

    def fetch_blob(self, repository: str, digest: str, sink: BlobSink, expected_size: int | None = None) -> int:
        """Stream a blob into `sink`, checking size and digest; returns the byte count.

        A broken connection raises TransientError (the caller may start over with a fresh sink);
        a wrong size or digest raises RegistryError. Either way the sink must be discarded.
        """
        hasher = new_hasher(digest)
        what = f"blob {digest} of {self.registry}/{repository}"
        with self.request("GET", f"/v2/{repository}/blobs/{digest}", [pull_scope(repository)]) as response:
            if response.status != 200:
                raise self._error(response, f"cannot get {what}")
            announced = response.content_length
            if expected_size is not None and announced is not None and announced != expected_size:
                raise RegistryError(
                    f"{what}: the registry announced {announced} bytes, the manifest says {expected_size}"
                )
            received = 0
            for chunk in response.iter_chunks():
                received += len(chunk)
                if expected_size is not None and received > expected_size:
                    raise RegistryError(f"{what}: more data than the {expected_size} bytes the manifest says")
                hasher.update(chunk)
                sink.write(chunk)
        if expected_size is not None and received != expected_size:
            raise TransientError(f"{what}: got {received} of {expected_size} bytes (truncated)")
        actual = f"{digest.split(':')[0]}:{hasher.hexdigest()}"
        if actual != digest:
            raise RegistryError(f"{what}: content has digest {actual}", hint="the registry's copy is corrupt")
        return received

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another repository; True when it did."""
        query = urllib.parse.urlencode({"mount": digest, "from": from_repository})
        path = f"/v2/{repository}/blobs/uploads/?{query}"
        scopes = [push_scope(repository), pull_scope(from_repository)]
        with self.request("POST", path, scopes, retry=True) as response:
            if response.status == 201:
                response.drain()
                return True
            if response.status == 202:
                # The registry opened an upload session instead; cancel it so it does not linger.
                location = self._location(response, "mount")
                response.drain()
                self._cancel_upload(location, repository)
                return False
            if response.status in (401, 403, 404):
                response.drain()
                return False
            raise self._error(response, f"cannot mount {digest} from {from_repository}")

    def _cancel_upload(self, location: str, repository: str) -> None:
        try:
            with self.request("DELETE", location, [push_scope(repository)]) as response:
                response.drain()
        except RegistryError:
            pass  # a stale upload session is the registry's to clean; it does not affect us

    def upload_blob(
        self, repository: str, digest: str, size: int, open_stream: Callable[[], BinaryIO], chunk_size: int | None = None
    ) -> None:
        """Upload a blob: POST a session, then one PUT (monolithic) or PATCHes and a closing PUT.

        A broken connection restarts the upload from a new session a bounded number of times.
        """
        chunk_size = self.chunk_size if chunk_size is None else chunk_size
        last: Exception | None = None
        for _attempt in range(1 + self.transport.retries):
            try:
                self._upload_once(repository, digest, size, open_stream, chunk_size)
                return
            except TransientError as exc:
                last = exc
        raise RegistryError(f"cannot upload blob {digest} to {self.registry}/{repository}: {last}")

    def _upload_once(
        self, repository: str, digest: str, size: int, open_stream: Callable[[], BinaryIO], chunk_size: int
    ) -> None:
        scopes = [push_scope(repository)]
        what = f"upload of {digest} to {self.registry}/{repository}"
        try:
            with self.request("POST", f"/v2/{repository}/blobs/uploads/", scopes, retry=True) as response:
                if response.status != 202:
                    raise self._error(response, f"cannot start {what}")
                location = self._location(response, what)
                response.drain()
            if chunk_size and size > chunk_size:
                offset = 0
                while offset < size:
                    length = min(chunk_size, size - offset)
                    headers = {
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + length - 1}",
                    }
                    with self.request(
                        "PATCH", location, scopes, headers, _opener_at(open_stream, offset), length, retry=False
                    ) as response:
                        if response.status != 202:
                            raise self._error(response, f"{what}: chunk at {offset} refused")
                        location = self._location(response, what)
                        response.drain()
                    offset += length
                body, length_to_send = None, None
            else:
                body, length_to_send = open_stream, size
            separator = "&" if "?" in location else "?"
            final = f"{location}{separator}{urllib.parse.urlencode({'digest': digest})}"
            headers = {"Content-Type": "application/octet-stream"}
            with self.request("PUT", final, scopes, headers, body, length_to_send, retry=False) as response:
                if response.status not in (201, 204):
                    raise self._error(response, f"{what} was refused")
                response.drain()
        except (ConnectionError, OSError) as exc:
            if isinstance(exc, RegistryError):
                raise
            raise TransientError(f"{what}: connection broken ({exc})") from exc


def _opener_at(open_stream: Callable[[], BinaryIO], offset: int) -> Callable[[], BinaryIO]:
    def opener() -> BinaryIO:
        stream = open_stream()
        stream.seek(offset)
        return stream

    return opener
