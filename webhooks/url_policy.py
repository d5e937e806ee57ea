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
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna  # IDNA 2008 + UTS #46, as requests encodes host names (a dependency of requests)
from django.conf import settings

from accounts.models import Environment

MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253
# A registration waits at most this long for DNS; a name that does not answer in time is
# accepted, since every delivery attempt resolves and checks it again before connecting.
DNS_TIMEOUT_SECONDS = 1.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$")
# A last label like this makes the host an IPv4 address or nothing (as browsers read URLs).
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
# Not on the public internet, whatever this Python's `ipaddress` tables say (they differ
# between patch releases): IETF protocol assignments, documentation, benchmarking,
# local-use NAT64, discard-only, deprecated site-local, SRv6 SIDs.
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
        "fec0::/10",
    )
)
# getaddrinfo cannot be cancelled: a lookup that times out keeps its thread until the resolver
# gives up. Enough threads that a few stuck lookups do not make every later one wait.
_resolver_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="url-policy-dns")


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
    host: str  # lower-case, no trailing dot, IDNA-encoded; an IP literal canonical, no brackets
    port: int


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, 6to4 or NAT64 (64:ff9b::/96) address carries."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    embedded = ip.ipv4_mapped or ip.sixtofour
    if embedded is None and ip in _NAT64:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return embedded


def is_forbidden_address(ip: IPAddress) -> bool:
    """True for every address a webhook must never reach outside local development."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return is_forbidden_address(embedded)
    if isinstance(ip, ipaddress.IPv6Address) and (ip.teredo or ip.is_site_local):
        return True
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_unspecified
        or ip in _SHARED
        or any(ip in network for network in _NOT_PUBLIC)
    )


def _address_kind(ip: IPAddress) -> str:
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if any(ip in network for network in _PRIVATE):
        return "a private address"
    return "a reserved address"


def describe_address(ip: IPAddress) -> str:
    """`127.0.0.1, a loopback address`: what a refused address is, for error messages."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return f"{ip} (the IPv4 address {embedded}), {_address_kind(embedded)}"
    return f"{ip}, {_address_kind(ip)}"


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host string names by itself, including legacy IPv4 spellings."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host.isascii() and _NUMERIC_HOST.match(host):
        try:
            # inet_aton reads 2130706433, 0177.0.0.1, 0x7f.1 and 127.1 as the resolver does.
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return None
    return None


def resolve(host: str, port: int, timeout: float = DNS_TIMEOUT_SECONDS) -> list[IPAddress]:
    """Every address `host` resolves to (empty if it does not resolve in time)."""

    def lookup() -> list[IPAddress]:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        # An IPv4 or IPv6 answer's address is text; other families never answer a host name.
        addresses = [info[4][0] for info in infos]
        return [ipaddress.ip_address(a.split("%", 1)[0]) for a in addresses if isinstance(a, str)]

    future = _resolver_pool.submit(lookup)
    try:
        return list(dict.fromkeys(future.result(timeout=timeout)))
    except (OSError, UnicodeError, FutureTimeout, ValueError):
        return []


def _is_control_or_space(c: str) -> bool:
    return c.isspace() or unicodedata.category(c) == "Cc"


def parse_destination(url: str, policy: UrlPolicy) -> Destination:
    """Checks the URL's form (not its addresses) and returns where it points."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlPolicyError(f"must be at most {MAX_URL_LENGTH} characters")
    if any(_is_control_or_space(c) for c in url):
        raise UrlPolicyError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        if "NFKC" in str(exc):
            raise UrlPolicyError("has invalid characters in its host name") from None
        raise UrlPolicyError("is malformed: square brackets must enclose an IPv6 address") from None
    scheme = parts.scheme.lower()
    if scheme not in (("https", "http") if policy.allow_http else ("https",)):
        if scheme == "http":
            raise UrlPolicyError("must use https:// (http:// is accepted in sandbox only)")
        if policy.allow_http:
            raise UrlPolicyError("must be an absolute https:// or http:// URL")
        raise UrlPolicyError("must be an absolute https:// URL")
    if "#" in url:
        raise UrlPolicyError("must not have a fragment (#…): a fragment is never sent")
    if "@" in parts.netloc:
        raise UrlPolicyError("must not contain a user name or password")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise UrlPolicyError("has an invalid port (use a number from 1 to 65535)")
    raw_host = parts.hostname or ""
    if not raw_host.rstrip("."):
        raise UrlPolicyError("must name a host")
    host = _normalize_host(raw_host, bracketed=parts.netloc.startswith("["))
    default_port = 443 if scheme == "https" else 80
    return Destination(scheme=scheme, host=host, port=port if port is not None else default_port)


def _normalize_host(raw_host: str, *, bracketed: bool) -> str:
    if bracketed:
        try:
            ipv6 = ipaddress.IPv6Address(raw_host)
        except ValueError:
            raise UrlPolicyError(
                "is malformed: square brackets must enclose an IPv6 address"
            ) from None
        if ipv6.scope_id:
            raise UrlPolicyError("must not give an IPv6 zone (the part after %)")
        return str(ipv6)
    if raw_host.isascii():
        host = raw_host.lower()
    else:
        try:
            host = idna.encode(raw_host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise UrlPolicyError("has an invalid host name") from None
    if host.endswith("."):
        host = host[:-1]
    literal = parse_ip_literal(host)
    if isinstance(literal, ipaddress.IPv4Address):
        return str(literal)
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise UrlPolicyError("has an invalid IPv4 address")
    if len(host) > MAX_HOST_LENGTH or not all(_LABEL.match(label) for label in labels):
        raise UrlPolicyError("has an invalid host name")
    return host


def is_local_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def check_addresses(destination: Destination, addresses: list[IPAddress]) -> None:
    """Refuses the destination if any of the addresses its name resolved to is forbidden."""
    for ip in addresses:
        if is_forbidden_address(ip):
            raise UrlPolicyError(
                f"has a host that resolves to {describe_address(ip)}, which webhooks may not reach"
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
                f"points at {describe_address(literal)}, which webhooks may not reach"
            )
        return destination
    if is_local_name(destination.host):
        raise UrlPolicyError("points at localhost, which webhooks may not reach")
    check_addresses(destination, resolve(destination.host, destination.port))
    return destination
