"""Outbound HTTP for deliveries: pooled, bounded, and unable to reach internal addresses.

Every connection resolves the host itself, checks every address against the URL policy and
connects to a checked address (TLS still verifies the host name), so a name that resolved to a
public address at registration and to 127.0.0.1 now (DNS rebinding) is refused at connect
time. Redirects are never followed, proxies from the environment are ignored, cookies are not
kept, and at most RESPONSE_EXCERPT_BYTES of a response are read.
"""

import contextlib
import heapq
import itertools
import socket
import threading
import time
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from webhooks.url_policy import is_forbidden_address, parse_ip_literal

RESPONSE_EXCERPT_BYTES = 16 * 1024
POOL_MAXSIZE = 64
USER_AGENT = "Kinetic-Webhooks/1.0 (+https://docs.microndelta.com/webhooks)"


class DestinationForbidden(NewConnectionError):
    """The host resolved to an address webhooks may not reach."""


class _Attempt:
    """One request in flight: the connection it uses, so the watchdog can cut it off."""

    __slots__ = ("aborted", "connection", "finished")

    def __init__(self) -> None:
        self.connection: HTTPConnection | None = None
        self.finished = False
        self.aborted = False

    def abort(self) -> None:
        connection = self.connection
        sock = getattr(connection, "sock", None) if connection is not None else None
        if sock is None or self.finished:
            return
        self.aborted = True
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # a blocked recv in the sending thread returns


class _Watchdog:
    """Enforces each attempt's total deadline. Socket timeouts bound each read, not the sum: a
    receiver dripping a byte a second would otherwise hold a sending thread for hours."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, attempt: _Attempt, deadline: float) -> None:
        with self._wake:
            heapq.heappush(self._heap, (deadline, next(self._order), attempt))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="webhook-watchdog", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap:
                    self._wake.wait()
                deadline, _, attempt = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0 and not attempt.finished:
                    self._wake.wait(delay)
                    continue
                heapq.heappop(self._heap)
            if not attempt.finished:
                attempt.abort()


_watchdog = _Watchdog()
_current = threading.local()


class _GuardedConnectionMixin:
    allow_private = False
    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any
    _dns_host: str

    def request(self, *args: Any, **kwargs: Any) -> None:
        attempt = getattr(_current, "attempt", None)
        if attempt is not None:
            attempt.connection = self
        super().request(*args, **kwargs)  # type: ignore[misc]

    def _new_conn(self) -> socket.socket:
        host = self._dns_host.rstrip(".")
        literal = parse_ip_literal(host)
        try:
            if literal is not None:
                addresses = [literal]
            else:
                infos = socket.getaddrinfo(host, self.port, type=socket.SOCK_STREAM)
                addresses = list(dict.fromkeys(parse_ip_literal(i[4][0]) for i in infos))
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        if not self.allow_private:
            for address in addresses:
                if address is None or is_forbidden_address(address):
                    raise DestinationForbidden(
                        self,  # type: ignore[arg-type]
                        f"{self.host} resolves to {address}, which webhooks may not reach",
                    )
        last_error: OSError | None = None
        for address in addresses:
            try:
                return urllib3_connection.create_connection(
                    (str(address), self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                last_error = exc
        raise NewConnectionError(
            self,  # type: ignore[arg-type]
            f"Failed to establish a new connection: {last_error}",
        )


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _OpenHTTPConnection(_GuardedHTTPConnection):
    allow_private = True


class _OpenHTTPSConnection(_GuardedHTTPSConnection):
    allow_private = True


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        super().__init__(pool_connections=256, pool_maxsize=POOL_MAXSIZE, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http_cls = _OpenHTTPConnection if self.allow_private else _GuardedHTTPConnection
        https_cls = _OpenHTTPSConnection if self.allow_private else _GuardedHTTPSConnection
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("Pool", (HTTPConnectionPool,), {"ConnectionCls": http_cls}),
            "https": type("Pool", (HTTPSConnectionPool,), {"ConnectionCls": https_cls}),
        }


@cache
def adapter(allow_private: bool) -> _GuardedAdapter:
    """One pooled adapter per process and policy (thread-safe for concurrent POSTs)."""
    return _GuardedAdapter(allow_private)


@lru_cache(maxsize=4096)
def _normalized_url(url: str) -> str:
    request = PreparedRequest()
    request.prepare_url(url, None)
    return str(request.url)


def _prepare(url: str, body: bytes, headers: dict[str, str]) -> PreparedRequest:
    """The request, prepared directly rather than through a Session.

    A Session merges cookies, environment settings, auth and hooks into every request, and
    follows redirects: deliveries want none of it, and that merging cost a third of the CPU
    of a POST. Sending the prepared request through the adapter also means no proxy, .netrc
    or CA bundle from the environment can apply.
    """
    request = PreparedRequest()
    request.method = "POST"
    request.url = _normalized_url(url)
    request.headers = CaseInsensitiveDict(
        {"User-Agent": USER_AGENT, **headers, "Content-Length": str(len(body))}
    )
    request.body = body
    return request


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str  # empty on a 2xx
    response_body: str
    duration_ms: int
    retry_after: str | None = None

    @property
    def succeeded(self) -> bool:
        return not self.error and self.status_code is not None and 200 <= self.status_code < 300


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps (requests and urllib3 nest them deeply)."""
    found: list[BaseException] = []
    stack = [exc]
    while stack and len(found) < 20:
        current = stack.pop()
        if any(current is f for f in found):
            continue
        found.append(current)
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        wrapped += list(current.args)
        stack += [w for w in wrapped if isinstance(w, BaseException)]
    return found


def _classify(exc: BaseException) -> str:
    causes = _causes(exc)
    if any(isinstance(c, DestinationForbidden) for c in causes):
        return "destination_forbidden"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls_error"
    if any(isinstance(c, NameResolutionError) for c in causes):
        return "dns_error"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection_error"
    return f"request_error:{type(exc).__name__}"


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    timeout: float,
) -> Outcome:
    """One delivery attempt. Never raises for what the network or the receiver does."""
    started = time.monotonic()
    deadline = started + timeout
    status: int | None = None
    excerpt = b""
    retry_after = None
    error = ""
    attempt = _Attempt()
    _current.attempt = attempt
    _watchdog.watch(attempt, deadline)
    try:
        with adapter(allow_private).send(
            _prepare(url, body, headers),
            stream=True,
            timeout=(min(timeout, 5.0), timeout),
            proxies={},
        ) as response:
            if attempt.aborted:
                # Cut off mid-headers: what arrived is not a response.
                raise TimeoutError("response headers not complete by the deadline")
            status = response.status_code
            retry_after = response.headers.get("Retry-After")
            excerpt = _read_capped(response, deadline)
            if 300 <= status < 400:
                error = "redirect_not_followed"
            elif not 200 <= status < 300:
                error = f"http_{status}"
    except Exception as exc:  # every failure is an outcome to record
        status = None
        error = "timeout" if attempt.aborted else _classify(exc)
    finally:
        attempt.finished = True
        _current.attempt = None
    return Outcome(
        status_code=status,
        error=error,
        response_body=excerpt.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
        duration_ms=int((time.monotonic() - started) * 1000),
        retry_after=retry_after,
    )


def _read_capped(response: requests.Response, deadline: float) -> bytes:
    """Up to RESPONSE_EXCERPT_BYTES, within the attempt's deadline; the rest is not read."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(chunk_size=4096):
            chunks.append(chunk)
            size += len(chunk)
            if size >= RESPONSE_EXCERPT_BYTES or time.monotonic() > deadline:
                break
    except (requests.exceptions.RequestException, OSError):
        pass  # the status is what counts; a broken body only shortens the excerpt
    return b"".join(chunks)[:RESPONSE_EXCERPT_BYTES]
