"""The webhook URL policy, through the public API (CONTRACT.md, "Webhook endpoints", `url`).

Every case runs against POST /v1/webhook_endpoints and PATCH /v1/webhook_endpoints/{id} in four
settings: a production key, a production key with WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS on (which
production must ignore), a sandbox key with the setting off, and a sandbox key with it on.

Only DNS is faked, and only for names invented under the reserved `.test` TLD; every other name
goes to the machine's real resolver (offline here, so `example.com` does not resolve, and names
that do not resolve are accepted at registration).
"""

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

import pytest

MAX_URL = 2048
PASSWORD = "hunter2"

PRODUCTION = "production"
PRODUCTION_PRIVATE = "production+allow_private"
SANDBOX = "sandbox"
SANDBOX_PRIVATE = "sandbox+allow_private"
MODES = [PRODUCTION, PRODUCTION_PRIVATE, SANDBOX, SANDBOX_PRIVATE]

FAKE_ZONE = ".webhooks.test"
FAKE_DNS: dict[str, list[str]] = {
    f"public{FAKE_ZONE}": ["8.8.8.8", "2001:4860:4860::8888"],
    f"mixed{FAKE_ZONE}": ["8.8.8.8", "10.0.0.5"],
    f"private-second6{FAKE_ZONE}": ["2001:4860:4860::8888", "fd00::5"],
    f"loopback6{FAKE_ZONE}": ["::1"],
    f"metadata{FAKE_ZONE}": ["169.254.169.254"],
    f"mapped{FAKE_ZONE}": ["::ffff:127.0.0.1"],
    f"unresolvable{FAKE_ZONE}": [],
}


@dataclass(frozen=True)
class Case:
    """`None` means accepted; a string is a fragment the refusal message must contain."""

    id: str
    url: str
    production: str | None
    sandbox: str | None
    sandbox_private: str | None
    dns: bool = False

    def expected(self, mode: str) -> str | None:
        if mode in (PRODUCTION, PRODUCTION_PRIVATE):
            return self.production
        return self.sandbox if mode == SANDBOX else self.sandbox_private


def accepted(id: str, url: str, *, dns: bool = False) -> Case:
    return Case(id, url, None, None, None, dns)


def refused(id: str, url: str, reason: str) -> Case:
    """Malformed: refused everywhere, whatever the settings."""
    return Case(id, url, reason, reason, reason)


def internal(id: str, url: str, reason: str, *, dns: bool = False) -> Case:
    """An internal destination: refused unless sandbox with private destinations allowed."""
    return Case(id, url, reason, reason, None, dns)


SCHEME = "must be an absolute https://"
SPACE = "must not contain spaces or control characters"
NO_HOST = "must name a host"
PORT = "has an invalid port"
USERINFO = "must not contain a user name or password"
HOST = "has an invalid host name"
BRACKETS = "square brackets must enclose an IPv6 address"
BAD_IPV4 = "has an invalid IPv4 address"
LOCALHOST = "points at localhost, which webhooks may not reach"
LOOPBACK_V4 = "points at 127.0.0.1, a loopback address"
UNSPECIFIED_V4 = "points at 0.0.0.0, the unspecified address"


def _at(address_and_kind: str) -> str:
    return f"points at {address_and_kind}, which webhooks may not reach"


def _resolves(address_and_kind: str) -> str:
    return f"resolves to {address_and_kind}, which webhooks may not reach"


CASES = [
    # --- accepted everywhere -------------------------------------------------------------
    accepted("https-name", "https://example.com/hooks"),
    accepted("https-name-upper-scheme", "HTTPS://Example.COM/hooks"),
    accepted("https-name-trailing-dot", "https://example.com./hooks"),
    accepted("https-name-port", "https://example.com:8443/hooks?x=1"),
    accepted("idn-unicode", "https://bücher.example/hooks"),
    accepted("idn-punycode", "https://xn--bcher-kva.example/hooks"),
    accepted("idn-eszett", "https://faß.example/hooks"),
    accepted("public-ipv4", "https://8.8.8.8/x"),
    accepted("public-ipv4-hex-spelling", "https://0x08.8.8.8/x"),
    accepted("public-ipv6", "https://[2001:4860:4860::8888]/x"),
    accepted("public-ipv6-port", "https://[2001:4860:4860::8888]:8443/x"),
    accepted("max-length", "https://example.com/" + "a" * (MAX_URL - len("https://example.com/"))),
    accepted("dns-public-only", f"https://public{FAKE_ZONE}/x", dns=True),
    accepted("dns-does-not-resolve", f"https://unresolvable{FAKE_ZONE}/x", dns=True),
    # --- http: sandbox only ------------------------------------------------------------------
    Case("http-public", "http://example.com/hooks", "must use https://", None, None),
    Case(
        "http-loopback",
        "http://127.0.0.1:8000/hooks",
        "must use https://",
        LOOPBACK_V4,
        None,
    ),
    # --- malformed: refused everywhere -----------------------------------------------------
    refused("no-scheme", "example.com/hooks", SCHEME),
    refused("scheme-relative", "//example.com/hooks", SCHEME),
    refused("ftp", "ftp://example.com/hooks", SCHEME),
    refused("javascript", "javascript:alert(1)", SCHEME),
    refused("file", "file:///etc/passwd", SCHEME),
    refused("space-in-host", "https://exa mple.com/x", SPACE),
    refused("space-in-path", "https://example.com/a b", SPACE),
    refused("leading-space", " https://example.com/x", SPACE),
    refused("trailing-newline", "https://example.com/x\n", SPACE),
    refused("tab-in-host", "https://exa\tmple.com/x", SPACE),
    refused("cr-lf", "https://example.com/x\r\nHost: evil", SPACE),
    refused("del", "https://example.com/\x7f", SPACE),
    refused("c1-control", "https://exa\x85mple.com/x", SPACE),
    refused("empty-host", "https:///x", NO_HOST),
    refused("scheme-only", "https://", NO_HOST),
    refused("port-only", "https://:443/x", NO_HOST),
    refused("dot-only-host", "https://./x", NO_HOST),
    refused("no-slashes", "https:example.com/x", NO_HOST),
    refused("port-too-big", "https://example.com:99999/x", PORT),
    refused("port-zero", "https://example.com:0/x", PORT),
    refused("port-negative", "https://example.com:-1/x", PORT),
    refused("port-not-number", "https://example.com:https/x", PORT),
    refused("user-and-password", f"https://user:{PASSWORD}@example.com/x", USERINFO),
    refused("user-only", "https://user@example.com/x", USERINFO),
    refused("empty-userinfo", "https://@example.com/x", USERINFO),
    refused("userinfo-hiding-loopback", f"https://example.com:{PASSWORD}@127.0.0.1/x", USERINFO),
    refused("backslash-userinfo", "https://example.com\\@127.0.0.1/x", USERINFO),
    refused("host-dollar", "https://exa$mple.com/x", HOST),
    refused("host-percent-encoded", "https://exa%20mple.com/x", HOST),
    refused("host-encoded-localhost", "https://%6c%6f%63%61%6c%68%6f%73%74/x", HOST),
    refused("host-leading-hyphen", "https://-bad.example/x", HOST),
    refused("host-empty-label", "https://a..b.example/x", HOST),
    refused("host-two-trailing-dots", "https://example.com../x", HOST),
    refused("host-label-too-long", "https://" + "a" * 64 + ".example/x", HOST),
    refused("host-too-long", "https://" + ("a" * 60 + ".") * 5 + "example/x", HOST),
    refused("idn-invalid-bidi", "https://\u0661\u0662.example/x", HOST),
    refused("host-fullwidth-at", "https://exa\uff20mple.com/x", "has invalid characters"),
    refused("ipv4-in-brackets", "https://[127.0.0.1]/x", BRACKETS),
    refused("name-in-brackets", "https://[example.com]/x", BRACKETS),
    refused("ipvfuture", "https://[v1.x]/x", BRACKETS),
    refused("unclosed-bracket", "https://[::1/x", BRACKETS),
    refused("ipv6-zone", "https://[fe80::1%25eth0]/x", "IPv6 zone"),
    refused("ipv4-octet-too-big", "https://999.1.1.1/x", BAD_IPV4),
    refused("ipv4-five-parts", "https://1.2.3.4.5/x", BAD_IPV4),
    refused("ipv4-bad-octal", "https://08.8.8.8/x", BAD_IPV4),
    # --- internal destinations: refused unless sandbox + WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS -
    internal("localhost", "https://localhost/x", LOCALHOST),
    internal("localhost-upper", "https://LocalHost:8443/x", LOCALHOST),
    internal("localhost-dot", "https://localhost./x", LOCALHOST),
    internal("localhost-sub", "https://api.localhost/x", LOCALHOST),
    internal("localhost-sub-dot", "https://api.localhost./x", LOCALHOST),
    internal(
        "localhost-fullwidth",
        "https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/x",
        LOCALHOST,
    ),
    internal("loopback", "https://127.0.0.1/x", LOOPBACK_V4),
    internal("loopback-other", "https://127.8.9.10/x", _at("127.8.9.10, a loopback address")),
    internal("loopback-short", "https://127.1/x", LOOPBACK_V4),
    internal("loopback-decimal", "https://2130706433/x", LOOPBACK_V4),
    internal("loopback-octal", "https://0177.0.0.1/x", LOOPBACK_V4),
    internal("loopback-hex", "https://0x7f.1/x", LOOPBACK_V4),
    internal("loopback-hex-whole", "https://0x7f000001/x", LOOPBACK_V4),
    internal("loopback-zero-padded", "https://127.000.000.001/x", LOOPBACK_V4),
    internal("loopback-trailing-dot", "https://127.0.0.1./x", LOOPBACK_V4),
    internal("loopback-ideographic-dots", "https://127\u30020\u30020\u30021/x", LOOPBACK_V4),
    internal("loopback-fullwidth-digits", "https://\uff11\uff12\uff17.0.0.1/x", LOOPBACK_V4),
    internal("unspecified", "https://0.0.0.0/x", UNSPECIFIED_V4),
    internal("unspecified-short", "https://0/x", UNSPECIFIED_V4),
    internal("this-network", "https://0.1.2.3/x", _at("0.1.2.3, a reserved address")),
    internal("private-10", "https://10.0.0.1/x", _at("10.0.0.1, a private address")),
    internal("private-172", "https://172.16.5.4/x", _at("172.16.5.4, a private address")),
    internal("private-192", "https://192.168.1.1/x", _at("192.168.1.1, a private address")),
    internal("private-octal", "https://012.0.0.1/x", _at("10.0.0.1, a private address")),
    internal(
        "shared", "https://100.64.0.1/x", _at("100.64.0.1, a shared (carrier-grade NAT) address")
    ),
    internal(
        "metadata", "https://169.254.169.254/latest", _at("169.254.169.254, a link-local address")
    ),
    internal("multicast-224", "https://224.0.0.1/x", _at("224.0.0.1, a multicast address")),
    internal("multicast-239", "https://239.1.1.1/x", _at("239.1.1.1, a multicast address")),
    internal("ietf-192-0-0", "https://192.0.0.8/x", _at("192.0.0.8, a reserved address")),
    internal("test-net-1", "https://192.0.2.1/x", _at("192.0.2.1, a reserved address")),
    internal("benchmarking", "https://198.18.0.1/x", _at("198.18.0.1, a reserved address")),
    internal("class-e", "https://240.0.0.1/x", _at("240.0.0.1, a reserved address")),
    internal("broadcast", "https://255.255.255.255/x", _at("255.255.255.255, a reserved address")),
    internal("ipv6-loopback", "https://[::1]/x", _at("::1, a loopback address")),
    internal(
        "ipv6-loopback-long", "https://[0:0:0:0:0:0:0:1]:8443/x", _at("::1, a loopback address")
    ),
    internal("ipv6-unspecified", "https://[::]/x", _at("::, the unspecified address")),
    internal("ipv6-link-local", "https://[fe80::1]/x", _at("fe80::1, a link-local address")),
    internal("ipv6-site-local", "https://[fec0::1]/x", _at("fec0::1, a reserved address")),
    internal("ipv6-ula", "https://[fd12:3456::1]/x", _at("fd12:3456::1, a private address")),
    internal("ipv6-multicast", "https://[ff02::1]/x", _at("ff02::1, a multicast address")),
    internal(
        "ipv6-documentation", "https://[2001:db8::1]/x", _at("2001:db8::1, a reserved address")
    ),
    internal(
        "ipv4-mapped-loopback",
        "https://[::ffff:127.0.0.1]/x",
        _at("::ffff:7f00:1 (the IPv4 address 127.0.0.1), a loopback address"),
    ),
    internal(
        "ipv4-mapped-loopback-hex",
        "https://[::ffff:7f00:1]/x",
        _at("::ffff:7f00:1 (the IPv4 address 127.0.0.1), a loopback address"),
    ),
    internal(
        "ipv4-mapped-private",
        "https://[::ffff:10.0.0.1]/x",
        _at("::ffff:a00:1 (the IPv4 address 10.0.0.1), a private address"),
    ),
    internal(
        "ipv4-mapped-metadata",
        "https://[::ffff:169.254.169.254]/x",
        _at("::ffff:a9fe:a9fe (the IPv4 address 169.254.169.254), a link-local address"),
    ),
    internal("ipv4-compatible", "https://[::127.0.0.1]/x", _at("::7f00:1, a reserved address")),
    internal(
        "6to4-loopback",
        "https://[2002:7f00:1::]/x",
        _at("2002:7f00:1:: (the IPv4 address 127.0.0.1), a loopback address"),
    ),
    internal(
        "nat64-private",
        "https://[64:ff9b::a00:1]/x",
        _at("64:ff9b::a00:1 (the IPv4 address 10.0.0.1), a private address"),
    ),
    internal(
        "nat64-local-use",
        "https://[64:ff9b:1::a00:1]/x",
        _at("64:ff9b:1::a00:1, a reserved address"),
    ),
    internal("teredo", "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x", "a reserved address"),
    # --- names that resolve: every address is checked --------------------------------------
    internal(
        "dns-public-and-private",
        f"https://mixed{FAKE_ZONE}/x",
        _resolves("10.0.0.5, a private address"),
        dns=True,
    ),
    internal(
        "dns-public-and-private-v6",
        f"https://private-second6{FAKE_ZONE}/x",
        _resolves("fd00::5, a private address"),
        dns=True,
    ),
    internal(
        "dns-ipv6-loopback-only",
        f"https://loopback6{FAKE_ZONE}/x",
        _resolves("::1, a loopback address"),
        dns=True,
    ),
    internal(
        "dns-metadata",
        f"https://metadata{FAKE_ZONE}/x",
        _resolves("169.254.169.254, a link-local address"),
        dns=True,
    ),
    internal(
        "dns-ipv4-mapped-loopback",
        f"https://mapped{FAKE_ZONE}/x",
        _resolves("::ffff:7f00:1 (the IPv4 address 127.0.0.1), a loopback address"),
        dns=True,
    ),
]


def _host(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch):
    """Answers for names under FAKE_ZONE; everything else goes to the real resolver."""
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        if not isinstance(name, str) or not name.rstrip(".").endswith(FAKE_ZONE):
            return real_getaddrinfo(host, port, family, type, proto, flags)
        lookups.append(name)
        answers = FAKE_DNS.get(name.rstrip("."), [])
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        infos: list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]] = []
        for answer in answers:
            ip = ipaddress.ip_address(answer)
            if ip.version == 4:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer, port or 0)))
            else:
                infos.append(
                    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (answer, port or 0, 0, 0))
                )
        return infos

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


@pytest.fixture
def client_for(request, settings, db):
    """An API client for a mode (`db` is requested here so the test database exists before the
    environment fixtures are looked up by name)."""

    def make(mode: str):
        settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = mode in (PRODUCTION_PRIVATE, SANDBOX_PRIVATE)
        return request.getfixturevalue("live_api" if mode.startswith(PRODUCTION) else "api")

    return make


def assert_refused(response, reason: str) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "parameter_invalid"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "url"
    message = error["message"]
    assert message.startswith("Invalid url: the URL "), message
    assert message.endswith("."), message
    assert reason in message, message
    assert PASSWORD not in response.content.decode()


def assert_looked_up(case: Case, mode: str, lookups: list[str]) -> None:
    if case.dns and mode != SANDBOX_PRIVATE:
        assert _host(case.url) in lookups


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_create(case, mode, client_for, fake_dns):
    client = client_for(mode)
    expected = case.expected(mode)

    response = client.post("/v1/webhook_endpoints", {"url": case.url})

    if expected is None:
        assert response.status_code == 201, response.content
        assert response.json()["url"] == case.url
        listed = client.get("/v1/webhook_endpoints").json()["data"]
        assert [e["url"] for e in listed] == [case.url]
    else:
        assert_refused(response, expected)
        listed = client.get("/v1/webhook_endpoints").json()
        assert listed["data"] == []
    assert_looked_up(case, mode, fake_dns)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_update(case, mode, client_for, fake_dns):
    client = client_for(mode)
    expected = case.expected(mode)
    original = client.create_endpoint("https://example.com/original", enabled_events=["*"])
    path = f"/v1/webhook_endpoints/{original['webhook_endpoint_id']}"

    response = client.patch(path, {"url": case.url})

    after = client.get(path)
    assert after.status_code == 200, after.content
    if expected is None:
        assert response.status_code == 200, response.content
        assert response.json()["url"] == case.url
        assert after.json()["url"] == case.url
    else:
        assert_refused(response, expected)
        unchanged = {k: v for k, v in original.items() if k != "signing_secret"}
        assert after.json() == unchanged
    assert_looked_up(case, mode, fake_dns)


# Refused by the request serializer before the URL policy sees them, so their messages are
# the serializer's, not "Invalid url: the URL ...".
SERIALIZER_CASES = [
    pytest.param(
        "https://example.com/" + "a" * (MAX_URL + 1 - len("https://example.com/")),
        f"no more than {MAX_URL} characters",
        id="longer-than-2048",
    ),
    pytest.param("https://example.com\x00.evil/x", "Null characters", id="nul"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("url", "reason"), SERIALIZER_CASES)
def test_refused_before_the_policy(url, reason, mode, client_for):
    client = client_for(mode)
    original = client.create_endpoint("https://example.com/original")
    path = f"/v1/webhook_endpoints/{original['webhook_endpoint_id']}"

    for response in (
        client.post("/v1/webhook_endpoints", {"url": url}),
        client.patch(path, {"url": url}),
    ):
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["code"] == "parameter_invalid"
        assert error["param"] == "url"
        assert error["message"].startswith("Invalid url: "), error["message"]
        assert reason in error["message"], error["message"]

    listed = client.get("/v1/webhook_endpoints").json()["data"]
    assert [e["webhook_endpoint_id"] for e in listed] == [original["webhook_endpoint_id"]]
    assert client.get(path).json()["url"] == "https://example.com/original"


def test_2049_characters_is_one_too_many():
    url = SERIALIZER_CASES[0].values[0]
    assert isinstance(url, str)
    assert len(url) == MAX_URL + 1


def test_private_destinations_are_off_in_test_settings(settings):
    assert settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS is False


def test_every_case_id_is_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
