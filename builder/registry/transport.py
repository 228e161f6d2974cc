"""HTTP plumbing for the registry client: scheme choice, redirects, bounded retries.

Built on http.client so responses can be streamed in chunks (blobs are never held whole in
memory). One connection per request keeps the state simple; on loopback and for the few
requests a pull or push makes this costs little.
"""
from __future__ import annotations

import base64
import http.client
import socket
import ssl
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Iterator, Mapping

from builder.errors import RegistryError

# Requests retried after a 5xx answer or a broken connection. POST/PATCH/PUT of an upload
# session are not retried here: the caller restarts the whole upload instead.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
CHUNK_SIZE = 1 << 16

# Errors meaning "the connection broke", worth retrying on an idempotent request.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    ConnectionError,  # reset, refused, aborted, broken pipe
    http.client.RemoteDisconnected,
    http.client.IncompleteRead,
    http.client.BadStatusLine,
    socket.timeout,
    TimeoutError,
)

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class TransientError(RegistryError):
    """A failure that may go away on a new attempt (connection reset, truncated body, 5xx)."""


def split_host_port(host: str) -> tuple[str, int | None]:
    """`127.0.0.1:5000` -> ("127.0.0.1", 5000); `[::1]:5000` -> ("::1", 5000)."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, _port(rest[1:] if rest.startswith(":") else "")
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, _port(port)
    return host, None


def _port(text: str) -> int | None:
    # ASCII digits only: str.isdigit() takes "²", which int() refuses.
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 5 else None


def uses_plain_http(host: str, insecure: Iterable[str] = ()) -> bool:
    """Plain HTTP only for loopback or a registry the user listed as insecure."""
    return is_loopback(host) or is_listed_insecure(host, insecure)


def is_loopback(host: str) -> bool:
    name, _ = split_host_port(host)
    return name in LOOPBACK_HOSTS


def is_listed_insecure(host: str, insecure: Iterable[str]) -> bool:
    name, _ = split_host_port(host)
    insecure_set = set(insecure)
    return host in insecure_set or name in insecure_set


_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Proxy:
    netloc: str  # host:port of the proxy
    headers: dict[str, str]  # Proxy-Authorization, when the proxy URL carries credentials


def proxy_for(scheme: str, netloc: str) -> Proxy | None:
    """The HTTP proxy for a registry URL, from HTTP_PROXY/HTTPS_PROXY/NO_PROXY as Docker reads
    them; none for loopback registries (Go's rule, which Docker follows)."""
    if is_loopback(netloc):
        return None
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme)
    if not url or urllib.request.proxy_bypass(split_host_port(netloc)[0]):
        return None
    parsed = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise RegistryError(f"unsupported proxy {url!r} for {scheme} registries",
                            hint="give an http:// proxy in HTTP_PROXY/HTTPS_PROXY")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    headers = {}
    if parsed.username is not None:
        user_pass = f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(user_pass.encode()).decode()
    return Proxy(f"{host}:{parsed.port or 80}", headers)


def same_origin(url: str, other: str) -> bool:
    """Same scheme, host and port: where credentials for one may also be sent to the other."""
    def origin(text: str) -> tuple[str, str, int | None] | None:
        parts = urllib.parse.urlsplit(text)
        scheme = parts.scheme.lower()
        try:
            port = parts.port or _DEFAULT_PORTS.get(scheme)
        except ValueError:  # a port that is not a number
            return None
        return scheme, (parts.hostname or "").lower(), port

    mine = origin(url)
    return mine is not None and mine == origin(other)


@dataclass
class Response:
    """An HTTP answer whose body is read on demand; close() frees the connection."""

    status: int
    reason: str
    headers: http.client.HTTPMessage
    url: str
    _raw: http.client.HTTPResponse
    _conn: http.client.HTTPConnection

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise RegistryError(f"{self.url}: invalid Content-Length {value!r}") from None

    def iter_chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The body in chunks; a connection broken mid-body raises TransientError."""
        try:
            while True:
                chunk = self._raw.read(chunk_size)
                if not chunk:
                    break
                yield chunk
        except TRANSIENT_ERRORS as exc:
            raise TransientError(f"{self.url}: connection broken while reading the body ({exc})") from exc

    def read_limited(self, limit: int, what: str) -> bytes:
        """Read the whole body, refusing more than `limit` bytes (manifests, tokens, errors)."""
        length = self.content_length
        if length is not None and length > limit:
            raise RegistryError(f"{what} at {self.url} is {length} bytes, more than the {limit} byte limit")
        parts: list[bytes] = []
        total = 0
        for chunk in self.iter_chunks():
            total += len(chunk)
            if total > limit:
                raise RegistryError(f"{what} at {self.url} is larger than the {limit} byte limit")
            parts.append(chunk)
        return b"".join(parts)

    def drain(self) -> None:
        try:
            self._raw.read(1 << 20)
        except Exception:  # the body is of no interest; a broken one must not mask the real error
            pass

    def close(self) -> None:
        self._raw.close()
        self._conn.close()

    def __enter__(self) -> "Response":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Body = bytes | Callable[[], BinaryIO] | None


@dataclass
class Transport:
    """Sends requests to one registry host, following redirects and retrying what is safe."""

    host: str
    plain_http: bool = False
    # An --insecure-registry: HTTPS without certificate checks first, then plain HTTP if the
    # registry does not speak TLS at all (Docker's order).
    insecure_tls: bool = False
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 0.2
    user_agent: str = "builder/0.1"
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    @property
    def base_url(self) -> str:
        return f"{'http' if self.plain_http else 'https'}://{self.host}"

    def url(self, path: str) -> str:
        return path if "://" in path else self.base_url + path

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        content_length: int | None = None,
        *,
        retry: bool | None = None,
    ) -> Response:
        """Send one request; 5xx and broken connections are retried for idempotent methods.

        `body` is bytes or a zero-argument callable opening a fresh stream (so a redirect or a
        retry can send it again). A redirect to another origin (scheme, host or port) drops
        the Authorization header, as blob storage behind a redirect has its own signed URL.
        """
        retryable = method in IDEMPOTENT_METHODS if retry is None else retry
        attempts = 1 + (self.retries if retryable else 0)
        last_error: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                self.sleep(self.backoff * (2 ** (attempt - 1)))
            try:
                response = self._follow_redirects(method, self.url(url), dict(headers or {}), body, content_length)
            except (ssl.SSLError, ConnectionRefusedError, ConnectionResetError) as exc:
                if self.insecure_tls and not self.plain_http and "://" not in url:
                    self.plain_http = True  # no TLS there: the registry speaks plain HTTP
                    return self.request(method, url, headers, body, content_length, retry=retry)
                if not isinstance(exc, ssl.SSLError):
                    last_error = exc
                    continue
                raise RegistryError(
                    f"TLS error talking to {self.host}: {exc}",
                    hint="for a registry without valid TLS use --insecure-registry " + self.host,
                ) from exc
            except TRANSIENT_ERRORS as exc:
                last_error = exc
                continue
            except OSError as exc:
                raise RegistryError(f"cannot reach registry {self.host}: {exc}") from exc
            if response.status in RETRY_STATUSES and attempt + 1 < attempts:
                response.drain()
                response.close()
                last_error = RegistryError(f"{method} {url}: HTTP {response.status}")
                continue
            return response
        # Retries spent: a plain RegistryError so callers do not multiply the attempts. A
        # request that was not retried here stays transient: its caller may start over.
        error_type = RegistryError if retryable else TransientError
        if isinstance(last_error, ConnectionRefusedError):
            raise error_type(
                f"cannot reach registry {self.host}: connection refused (failed after {attempts} attempt(s))",
                hint=f"is a registry listening at {self.base_url}?",
            )
        raise error_type(
            f"{method} {self.url(url)} failed after {attempts} attempt(s): {last_error}",
            hint="the registry or the network is unstable; try again",
        )

    def _follow_redirects(
        self, method: str, url: str, headers: dict[str, str], body: Body, content_length: int | None
    ) -> Response:
        origin = url
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send_once(method, url, headers, body, content_length)
            if response.status not in REDIRECT_STATUSES or method not in ("GET", "HEAD"):
                return response
            location = response.header("Location")
            response.drain()
            response.close()
            if not location:
                raise RegistryError(f"{method} {url}: redirect without a Location header")
            url = urllib.parse.urljoin(url, location)
            if not same_origin(url, origin):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        raise RegistryError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")

    def _send_once(
        self, method: str, url: str, headers: dict[str, str], body: Body, content_length: int | None
    ) -> Response:
        parts = urllib.parse.urlsplit(url)
        proxy = proxy_for(parts.scheme, parts.netloc)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        send_headers = {"User-Agent": self.user_agent, **headers}
        if parts.scheme == "https":
            context = ssl.create_default_context()
            if self.insecure_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if proxy is None:
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    parts.netloc, timeout=self.timeout, context=context
                )
            else:
                # TLS to the registry through the proxy's CONNECT tunnel, as Docker does.
                conn = http.client.HTTPSConnection(proxy.netloc, timeout=self.timeout, context=context)
                conn.set_tunnel(parts.netloc, headers=proxy.headers)
        elif parts.scheme == "http":
            if proxy is None:
                conn = http.client.HTTPConnection(parts.netloc, timeout=self.timeout)
            else:
                conn = http.client.HTTPConnection(proxy.netloc, timeout=self.timeout)
                target = urllib.parse.urlunsplit(parts._replace(fragment=""))  # absolute-form, for the proxy
                send_headers.update(proxy.headers)
        else:
            raise RegistryError(f"unsupported URL scheme in {url}")
        try:
            if body is None:
                if method in ("PUT", "POST", "PATCH"):
                    send_headers.setdefault("Content-Length", "0")
                conn.request(method, target, headers=send_headers)
            elif isinstance(body, bytes):
                send_headers["Content-Length"] = str(len(body))
                conn.request(method, target, body=body, headers=send_headers)
            else:
                if content_length is None:
                    raise ValueError("a streamed body needs its content_length")
                send_headers["Content-Length"] = str(content_length)
                conn.putrequest(method, target, skip_accept_encoding=True)
                for key, value in send_headers.items():
                    conn.putheader(key, value)
                conn.endheaders()
                with body() as stream:
                    remaining = content_length
                    while remaining > 0:
                        chunk = stream.read(min(CHUNK_SIZE, remaining))
                        if not chunk:
                            raise RegistryError(f"local data for {url} ended {remaining} bytes early")
                        conn.send(chunk)
                        remaining -= len(chunk)
            raw = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        return Response(raw.status, raw.reason, raw.headers, url, raw, conn)
