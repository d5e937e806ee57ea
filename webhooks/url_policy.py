"""Where webhooks may be sent: the one URL policy, applied at registration and on every attempt.

Production endpoints: `https://` only, and never a host that is, or resolves to, an address
outside the public internet (private, loopback, link-local, shared, multicast, reserved,
unspecified; IPv4-mapped, 6to4 and NAT64 forms unwrapped; legacy IPv4 spellings such as
`2130706433`, `0177.0.0.1` or `0x7f.1` read the way the C resolver reads them).
Sandbox endpoints may also use `http://`, and reach internal hosts only where the operator's
`WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS` is on (local development).
"""

import ipaddress
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from accounts.models import Environment

MAX_URL_LENGTH = 2048
DNS_TIMEOUT_SECONDS = 2.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_resolver_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="url-policy-dns")


class UrlPolicyError(ValueError):
    """The URL may not be used; the message says why, in words a customer can act on."""


@dataclass(frozen=True)
class UrlPolicy:
    allow_http: bool
    allow_private: bool

    @classmethod
    def for_environment(cls, environment: Environment) -> "UrlPolicy":
        if environment.is_production:
            return cls(allow_http=False, allow_private=False)
        return cls(
            allow_http=True,
            allow_private=bool(settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS),
        )


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str  # lower-case, no trailing dot, IDNA-encoded; an IP literal without brackets
    port: int


def is_forbidden_address(ip: IPAddress) -> bool:
    """True for every address a webhook must never reach outside local development."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_forbidden_address(embedded)
        if ip.teredo:
            return True
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_unspecified
    )


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host string names by itself, including legacy IPv4 spellings."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            # inet_aton reads 2130706433, 0177.0.0.1, 0x7f.1 and 127.1 as the resolver does.
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def resolve(host: str, port: int, timeout: float = DNS_TIMEOUT_SECONDS) -> list[IPAddress]:
    """Every address `host` resolves to (empty if it does not resolve in time)."""

    def lookup() -> list[IPAddress]:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]

    future = _resolver_pool.submit(lookup)
    try:
        return list(dict.fromkeys(future.result(timeout=timeout)))
    except (OSError, UnicodeError, FutureTimeout, ValueError):
        return []


def parse_destination(url: str, policy: UrlPolicy) -> Destination:
    """Checks the URL's form (not its addresses) and returns where it points."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlPolicyError(f"must be at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise UrlPolicyError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlPolicyError(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if policy.allow_http else ("https",)
    if scheme not in allowed:
        if scheme == "http":
            raise UrlPolicyError("must use https:// (http:// is accepted in sandbox only)")
        raise UrlPolicyError("must be an absolute https:// URL")
    if "@" in parts.netloc:
        raise UrlPolicyError("must not contain a user name or password")
    raw_host = (parts.hostname or "").rstrip(".")
    if not raw_host:
        raise UrlPolicyError("must name a host")
    host = _normalize_host(raw_host)
    return Destination(scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80))


def _normalize_host(raw_host: str) -> str:
    if parse_ip_literal(raw_host) is not None:
        return raw_host
    try:
        host = raw_host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UrlPolicyError("has an invalid host name") from None
    if not all(_LABEL.match(label) for label in host.split(".")):
        raise UrlPolicyError("has an invalid host name")
    return host


def is_local_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def check_addresses(destination: Destination, addresses: list[IPAddress]) -> None:
    for ip in addresses:
        if is_forbidden_address(ip):
            raise UrlPolicyError(
                f"resolves to {ip}, a private, loopback or reserved address, "
                "which webhooks may not reach"
            )


def check_url(url: str, policy: UrlPolicy) -> Destination:
    """Registration-time check. A name that does not resolve now is accepted: every delivery
    attempt resolves it again and checks the address it connects to."""
    destination = parse_destination(url, policy)
    if policy.allow_private:
        return destination
    literal = parse_ip_literal(destination.host)
    if literal is not None:
        if is_forbidden_address(literal):
            raise UrlPolicyError(
                f"points at {literal}, a private, loopback or reserved address, "
                "which webhooks may not reach"
            )
        return destination
    if is_local_name(destination.host):
        raise UrlPolicyError("points at localhost, which webhooks may not reach")
    check_addresses(destination, resolve(destination.host, destination.port))
    return destination
