"""Outbound HTTP for deliveries: pooled, bounded, and unable to reach internal addresses.

Built on requests' documented adapter hooks and urllib3's public pool attributes, and on the
way Saleor's requests-hardened pins a request to a checked address:

- `post` resolves the host itself and checks every address against the URL policy; the
  adapter's `build_connection_pool_key_attributes` hook then sends the request to a checked
  address, with the host name as the TLS server name, so the certificate is still verified
  against the name. A name that resolved to a public address at registration and to 127.0.0.1
  now (DNS rebinding) is refused, and nothing looks the name up again before connecting.
- The request goes straight to the adapter, never through a Session: no redirect is followed
  and no proxy, .netrc, CA bundle or cookie from the environment applies.
- At most RESPONSE_EXCERPT_BYTES of a response are read.
- The total deadline of an attempt is the one guarantee with no public hook: urllib3's timeouts
  bound each read, not their sum. A watchdog shuts down the socket of an attempt still running
  at its deadline; the pools' connection class (urllib3's `ConnectionCls`, swapped in through
  `pool_classes_by_scheme` as urllib3's own SOCKS support does) tells the attempt which socket
  that is. A new connection's TLS handshake comes before that, so it is bounded only by the
  connect timeout of each of its reads.
"""

import contextlib
import heapq
import http.client
import itertools
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

from webhooks.url_policy import is_forbidden_address, parse_ip_literal

RESPONSE_EXCERPT_BYTES = 16 * 1024
POOL_MAXSIZE = 64
CONNECT_TIMEOUT = 5.0
USER_AGENT = "Kinetic-Webhooks/1.0 (+https://docs.microndelta.com/webhooks)"


class DestinationForbidden(Exception):
    """The host resolved to an address webhooks may not reach."""


# --- The total deadline ----------------------------------------------------------------------

# One lock for handing a connection to an attempt and for cutting it off, so the watchdog never
# shuts down a connection that another attempt has taken from the pool since.
_cutting = threading.Lock()


class _Attempt:
    """One attempt in flight: its deadline and the connection it is using."""

    __slots__ = ("connection", "cut", "deadline", "finished")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.connection: _WatchedConnection | None = None
        self.finished = False
        self.cut = False

    def cut_off(self) -> None:
        with _cutting:
            connection = self.connection
            if self.finished or connection is None or connection.attempt is not self:
                return
            sock = cast(HTTPConnection, connection).sock
            if sock is None:
                return
            self.cut = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # a blocked read in the sending thread returns


_in_flight: ContextVar[_Attempt | None] = ContextVar("webhook_attempt_in_flight", default=None)


class _WatchedConnection:
    """A pooled connection that tells the attempt in flight which socket it is using.

    `request` is urllib3's public method that starts each exchange on a connection, in the
    sending thread, so the attempt is the one `post` put in `_in_flight`.
    """

    attempt: _Attempt | None = None

    def request(self, *args: Any, **kwargs: Any) -> None:
        attempt = _in_flight.get()
        if attempt is not None:
            with _cutting:
                self.attempt = attempt
                attempt.connection = self
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _Watchdog:
    """Cuts off each attempt still running at its deadline. Socket timeouts bound each read,
    not the sum: a receiver dripping a byte a second would otherwise hold a sending thread for
    hours."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, attempt: _Attempt) -> None:
        with self._wake:
            heapq.heappush(self._heap, (attempt.deadline, next(self._order), attempt))
            # Started here, not at import, so that a forked worker process gets its own.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="webhook-watchdog", daemon=True
                )
                self._thread.start()
            # Woken only by a deadline earlier than every other; with one timeout for all
            # attempts that is rare, so sending does not wake this thread on every request.
            if self._heap[0][2] is attempt:
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
                heapq.heappop(self._heap)  # finished ones too, whenever they reach the top
            attempt.cut_off()


_watchdog = _Watchdog()


# --- Where a request goes --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL as requests sends it, and the host it names: to resolve, verify and send as Host."""

    url: str
    https: bool
    name: str  # the host as in the URL (lower-case, IDNA-encoded), no brackets or final dot
    port: int
    host_header: str
    address: str | None  # the address the host names by itself, if it does


@lru_cache(maxsize=4096)
def _target(url: str) -> _Target:
    prepared = PreparedRequest()
    prepared.prepare_url(url, None)
    parts = urlsplit(str(prepared.url))
    if parts.scheme not in ("http", "https"):
        raise requests.exceptions.InvalidSchema(f"{parts.scheme!r} URLs are not sent")
    name = (parts.hostname or "").rstrip(".")
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    # As http.client writes it for a connection to the host itself.
    host_header = f"[{name}]" if ":" in name else name
    if port != default_port:
        host_header = f"{host_header}:{port}"
    literal = parse_ip_literal(name)
    return _Target(
        url=str(prepared.url),
        https=parts.scheme == "https",
        name=name,
        port=port,
        host_header=host_header,
        address=None if literal is None else str(literal),
    )


@lru_cache(maxsize=4096)
def _reachable(address: str) -> bool:
    """The URL policy's answer for one address (it depends on nothing else, so it is kept)."""
    ip = parse_ip_literal(address)
    return ip is not None and not is_forbidden_address(ip)


class DnsTimeout(Exception):
    """The host's name did not resolve by the attempt's deadline."""


class _Resolver:
    """getaddrinfo within an attempt's deadline. It cannot be cancelled and the system
    resolver may take 30 s (5 s by 2 tries by 3 servers): each lookup runs on a thread of its
    own pool and the attempt waits for it no longer than its deadline. One lookup per name at a
    time, shared by the attempts that ask meanwhile, so a customer's slow name holds one
    thread, not one per delivery."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], Future[list[str]]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0

    def addresses(self, name: str, port: int, deadline: float) -> list[str]:
        key = (name, port)
        with self._lock:
            # Made in the process that uses it: a forked child has none of its parent's threads.
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="webhook-dns")
                self._pid, self._pending = os.getpid(), {}
            future = self._pending.get(key)
            if future is None:
                future = self._pending[key] = self._pool.submit(self._lookup, key)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            raise DnsTimeout(f"{name} did not resolve in time") from None

    def _lookup(self, key: tuple[str, int]) -> list[str]:
        try:
            infos = socket.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM)
        finally:
            with self._lock:
                self._pending.pop(key, None)
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{key[0]} has no address")
        return found


_resolver = _Resolver()


def _addresses(target: _Target, allow_private: bool, deadline: float) -> list[str]:
    """Every address the host resolves to, in the resolver's order, each one checked."""
    if target.address is not None:
        found = [target.address]
    else:
        found = _resolver.addresses(target.name, target.port, deadline)
    if not allow_private:
        for address in found:
            if not _reachable(address):
                raise DestinationForbidden(
                    f"{target.name} resolves to {address}, which webhooks may not reach"
                )
    return found


class _PinnedRequest(PreparedRequest):
    """A POST to be sent to one checked address of its host."""

    def __init__(self, target: _Target, address: str, body: bytes, headers: dict[str, str]) -> None:
        super().__init__()
        self.target = target
        self.address = address
        self.method = "POST"
        self.url = target.url
        self.headers = CaseInsensitiveDict(
            {
                "Host": target.host_header,
                "User-Agent": USER_AGENT,
                **headers,
                "Content-Length": str(len(body)),
            }
        )
        self.body = body


class _PinningAdapter(HTTPAdapter):
    """Sends each request to the address it carries, through pools whose connections the
    watchdog can cut off."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        # urllib3 keeps the pool classes per manager so that they can be swapped.
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }

    def build_connection_pool_key_attributes(
        self, request: PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        pinned = cast(_PinnedRequest, request)
        host_params["host"] = pinned.address
        if pinned.target.https:
            # SNI, and the name the certificate must match, stay the host's.
            pool_kwargs["server_hostname"] = pinned.target.name
        return host_params, pool_kwargs


# One adapter per process: its pools are shared by the worker's sending threads, keyed by
# address, port and TLS server name.
_adapter = _PinningAdapter(pool_connections=256, pool_maxsize=POOL_MAXSIZE, max_retries=0)


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True if no connection was made, so nothing was sent."""
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, MaxRetryError) and isinstance(cause.reason, ConnectTimeoutError)


def _send(
    target: _Target, addresses: list[str], body: bytes, headers: dict[str, str], deadline: float
) -> requests.Response:
    """Sends to the first address that takes a connection: the next one is tried after a
    refusal or a connect timeout (as browsers do), while the deadline allows."""
    *earlier, last = addresses
    for address in earlier:
        try:
            return _send_to(address, target, body, headers, deadline)
        except requests.exceptions.ConnectionError as exc:
            if not _never_connected(exc) or time.monotonic() >= deadline:
                raise
    return _send_to(last, target, body, headers, deadline)


def _send_to(
    address: str, target: _Target, body: bytes, headers: dict[str, str], deadline: float
) -> requests.Response:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise requests.exceptions.ConnectTimeout(f"no time left to connect to {target.name}")
    return _adapter.send(
        _PinnedRequest(target, address, body, headers),
        stream=True,
        timeout=(min(remaining, CONNECT_TIMEOUT), remaining),
        proxies={},
    )


# --- The attempt -----------------------------------------------------------------------------


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


def _classify(exc: BaseException) -> str:
    if isinstance(exc, DestinationForbidden):
        return "destination_forbidden"
    if isinstance(exc, socket.gaierror):
        return "dns_error"
    if isinstance(exc, DnsTimeout):
        return "dns_timeout"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls_error"
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
    attempt = _Attempt(started + timeout)
    status: int | None = None
    excerpt = b""
    retry_after = None
    error = ""
    in_flight = _in_flight.set(attempt)
    _watchdog.watch(attempt)
    try:
        target = _target(url)
        addresses = _addresses(target, allow_private, attempt.deadline)
        with _send(target, addresses, body, headers, attempt.deadline) as response:
            if attempt.cut:
                # Cut off mid-headers: what arrived is not a response.
                raise TimeoutError("response headers not complete by the deadline")
            status = response.status_code
            retry_after = response.headers.get("Retry-After")
            if status < 200:
                # An interim answer (102, 103: http.client skips only 100) taken for the final
                # one: the final answer is still to come on this connection, and the next
                # request sent on it, another tenant's maybe, would read it. Never reused.
                response.raw.close()
            excerpt = _read_capped(response, attempt.deadline)
            if 300 <= status < 400:
                error = "redirect_not_followed"
            elif not 200 <= status < 300:
                error = f"http_{status}"
    except Exception as exc:  # every failure is an outcome to record
        status = None
        error = "timeout" if attempt.cut else _classify(exc)
    finally:
        attempt.finished = True
        _in_flight.reset(in_flight)
    return Outcome(
        status_code=status,
        error=error,
        response_body=excerpt.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
        duration_ms=int((time.monotonic() - started) * 1000),
        retry_after=retry_after,
    )


def _read_capped(response: requests.Response, deadline: float) -> bytes:
    """Up to RESPONSE_EXCERPT_BYTES, within the attempt's deadline; the rest is not read.
    Read as it arrives (`read1`), so that what came before a stall is kept when the watchdog
    cuts the connection."""
    chunks: list[bytes] = []
    size = 0
    if response.raw.closed:
        return b""
    try:
        while size < RESPONSE_EXCERPT_BYTES and time.monotonic() <= deadline:
            chunk = response.raw.read1(RESPONSE_EXCERPT_BYTES - size, decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError):
        pass  # the status is what counts; a broken body only shortens the excerpt
    return b"".join(chunks)[:RESPONSE_EXCERPT_BYTES]
