"""What a delivery attempt may reach and how long it may take (SSRF, hostile receivers).

These run the real dispatcher (claim, sign, send, record) in the test process rather than in a
worker, because they control DNS: `socket.getaddrinfo` is patched for names under
`.webhooks.test` only, which is how a rebinding attack looks from here. Receivers are real
servers on 127.0.0.1.
"""

import contextlib
import datetime
import socket
import threading
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deliveries import transport
from deliveries.models import DeliveryAttempt
from tests import factories
from tests.servers import Receiver, Reply

PUBLIC = "93.184.216.34"
real_getaddrinfo = socket.getaddrinfo


@pytest.fixture
def dns(monkeypatch):
    """answers[name] = [addresses]: what the fake resolver says for names under .webhooks.test."""
    answers: dict[str, list[str]] = {}

    def getaddrinfo(host, port, *args, **kwargs):
        name = host.rstrip(".") if isinstance(host, str) else host
        if isinstance(name, str) and name.endswith(".webhooks.test"):
            if name not in answers:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            family = {4: socket.AF_INET, 6: socket.AF_INET6}
            return [
                (family[6 if ":" in a else 4], socket.SOCK_STREAM, 6, "", (a, port or 0))
                for a in answers[name]
            ]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def self_signed(tmp_path, name):
    """A certificate for `name` and its key, as files: (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


@pytest.fixture
def tls_receiver(tmp_path):
    """A receiver with a self-signed certificate (no client trusts it)."""
    server = Receiver(tls=self_signed(tmp_path, "rebind.webhooks.test"))
    yield server
    server.close()


def deliver_once(environment, endpoint):
    """Publishes one event and runs its delivery to `endpoint` once, here and now."""
    event = factories.deliver_here(environment)
    return DeliveryAttempt.objects.get(
        delivery__event=event, delivery__endpoint__public_id=endpoint["webhook_endpoint_id"]
    )


def attempt_for(environment, url):
    endpoint = factories.api_client(environment).create_endpoint(url)
    return deliver_once(environment, endpoint)


def test_dns_rebinding_cannot_reach_an_internal_address_in_production(
    production, dns, tls_receiver, settings
):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # never applies to production
    dns["rebind.webhooks.test"] = [PUBLIC]  # what registration sees
    client = factories.api_client(production)
    url = f"https://rebind.webhooks.test:{tls_receiver.port}/hook"
    endpoint = client.create_endpoint(url)
    dns["rebind.webhooks.test"] = ["127.0.0.1"]  # what the attacker's DNS says at delivery

    attempt = deliver_once(production, endpoint)
    assert attempt.error == "destination_forbidden"
    assert not attempt.succeeded
    assert tls_receiver.received() == []  # not even a TLS handshake's request


def test_a_name_with_one_private_answer_among_public_ones_is_refused(production, dns, tls_receiver):
    dns["mixed.webhooks.test"] = [PUBLIC]
    client = factories.api_client(production)
    endpoint = client.create_endpoint(f"https://mixed.webhooks.test:{tls_receiver.port}/hook")
    dns["mixed.webhooks.test"] = [PUBLIC, "10.0.0.7"]
    attempt = deliver_once(production, endpoint)
    assert attempt.error == "destination_forbidden"


@pytest.mark.parametrize("allow", [False, True])
def test_sandbox_follows_the_operators_setting_at_delivery_too(
    sandbox, dns, receiver, settings, allow
):
    dns["dev.webhooks.test"] = [PUBLIC]
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = False
    client = factories.api_client(sandbox)
    endpoint = client.create_endpoint(f"http://dev.webhooks.test:{receiver.port}/hook")
    dns["dev.webhooks.test"] = ["127.0.0.1"]
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = allow
    attempt = deliver_once(sandbox, endpoint)
    if allow:
        assert attempt.succeeded
        assert len(receiver.received("/hook")) == 1
    else:
        assert attempt.error == "destination_forbidden"
        assert receiver.received() == []


def test_an_untrusted_certificate_is_a_failed_attempt(sandbox, dns, tls_receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    dns["rebind.webhooks.test"] = ["127.0.0.1"]
    attempt = attempt_for(sandbox, f"https://rebind.webhooks.test:{tls_receiver.port}/hook")
    assert attempt.error == "tls_error"
    delivery = attempt.delivery
    delivery.refresh_from_db()
    assert delivery.status == "pending"  # retried later
    assert delivery.next_attempt_at is not None


# --- Hostile receivers, straight through the outbound client --------------------------------


def post(receiver, path, timeout=2.0):
    return transport.post(
        f"{receiver.url}{path}", b"{}", {"Content-Type": "application/json"},
        allow_private=True, timeout=timeout,
    )  # fmt: skip


def test_a_huge_response_is_read_no_further_than_the_excerpt(receiver):
    receiver.script("/huge", Reply(200, stream=100 * 1024 * 1024))
    outcome = post(receiver, "/huge")
    assert outcome.succeeded
    assert len(outcome.response_body) == transport.RESPONSE_EXCERPT_BYTES
    time.sleep(0.2)
    assert receiver.bytes_streamed < 10 * 1024 * 1024  # we hung up long before 100 MB


def test_a_response_that_never_ends_is_cut_at_the_excerpt(receiver):
    receiver.script("/endless", Reply(200, endless=True))
    outcome = post(receiver, "/endless")
    assert outcome.succeeded
    assert len(outcome.response_body) == transport.RESPONSE_EXCERPT_BYTES


def test_a_slow_drip_is_cut_at_the_attempts_deadline(receiver):
    receiver.script("/drip", Reply(drip_headers=True))
    started = time.monotonic()
    outcome = post(receiver, "/drip", timeout=1.5)
    took = time.monotonic() - started
    assert outcome.error == "timeout"
    assert not outcome.succeeded
    # Bounded by the total deadline, not by the per-read socket timeout.
    assert took < 10


def test_a_connection_reset_is_a_failed_attempt(receiver):
    receiver.script("/reset", Reply(reset=True))
    outcome = post(receiver, "/reset")
    assert outcome.error == "connection_error"


def test_a_redirect_to_an_internal_address_is_not_followed(receiver):
    receiver.script(
        "/redirect", Reply(307, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    )
    outcome = post(receiver, "/redirect")
    assert outcome.status_code == 307
    assert outcome.error == "redirect_not_followed"
    assert not outcome.succeeded


def test_proxy_variables_from_the_environment_are_ignored(receiver, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    outcome = post(receiver, "/direct")
    assert outcome.succeeded
    assert len(receiver.received("/direct")) == 1


def test_the_outbound_client_refuses_private_addresses_by_itself(receiver):
    outcome = transport.post(f"{receiver.url}/x", b"{}", {}, allow_private=False, timeout=2.0)
    assert outcome.error == "destination_forbidden"
    for url in ("http://[::1]:9/x", "http://0x7f.1:9/x", "http://2130706433:9/x"):
        assert transport.post(url, b"{}", {}, allow_private=False, timeout=2.0).error == (
            "destination_forbidden"
        )
    assert receiver.received() == []


# --- The checked address is the one connected to ---------------------------------------------


@pytest.fixture
def trusted_tls_receiver(tmp_path, monkeypatch):
    """A receiver whose certificate names secure.webhooks.test, trusted by the outbound client
    for this test (its CA bundle is requests' default one, read at each request)."""
    cert_file, key_file = self_signed(tmp_path, "secure.webhooks.test")
    monkeypatch.setattr(requests.adapters, "DEFAULT_CA_BUNDLE_PATH", cert_file)
    server = Receiver(tls=(cert_file, key_file))
    yield server
    server.close()


def test_tls_verifies_the_host_name_on_a_connection_to_the_checked_address(
    dns, trusted_tls_receiver
):
    dns["secure.webhooks.test"] = ["127.0.0.1"]
    dns["other.webhooks.test"] = ["127.0.0.1"]
    port = trusted_tls_receiver.port
    outcome = transport.post(
        f"https://secure.webhooks.test:{port}/hook", b"{}", {}, allow_private=True, timeout=2.0
    )
    assert outcome.succeeded, outcome
    (received,) = trusted_tls_receiver.received("/hook")
    assert received.headers["Host"] == f"secure.webhooks.test:{port}"
    # Same address, same certificate, but a name the certificate does not give.
    outcome = transport.post(
        f"https://other.webhooks.test:{port}/hook", b"{}", {}, allow_private=True, timeout=2.0
    )
    assert outcome.error == "tls_error"
    assert len(trusted_tls_receiver.received("/hook")) == 1


def test_plain_http_sends_the_host_name_to_the_checked_address(dns, receiver):
    dns["plain.webhooks.test"] = ["127.0.0.1"]
    outcome = transport.post(
        f"http://plain.webhooks.test:{receiver.port}/hook", b"{}", {},
        allow_private=True, timeout=2.0,
    )  # fmt: skip
    assert outcome.succeeded, outcome
    assert receiver.received("/hook")[0].headers["Host"] == f"plain.webhooks.test:{receiver.port}"


def test_the_next_address_is_tried_when_the_first_refuses(dns, receiver):
    # The receiver listens on 127.0.0.1 only: 127.0.0.2 refuses the connection.
    dns["two.webhooks.test"] = ["127.0.0.2", "127.0.0.1"]
    outcome = transport.post(
        f"http://two.webhooks.test:{receiver.port}/hook", b"{}", {},
        allow_private=True, timeout=2.0,
    )  # fmt: skip
    assert outcome.succeeded, outcome
    assert len(receiver.received("/hook")) == 1


def test_a_name_that_rebinds_after_a_pooled_delivery_is_checked_again(dns, receiver):
    dns["pooled.webhooks.test"] = ["127.0.0.1"]
    url = f"http://pooled.webhooks.test:{receiver.port}/hook"
    assert transport.post(url, b"{}", {}, allow_private=True, timeout=2.0).succeeded
    dns["pooled.webhooks.test"] = [PUBLIC, "169.254.169.254"]
    outcome = transport.post(url, b"{}", {}, allow_private=False, timeout=2.0)
    assert outcome.error == "destination_forbidden"
    assert len(receiver.received("/hook")) == 1


def test_a_name_that_does_not_resolve_is_a_dns_error(dns):
    outcome = transport.post(
        "https://nowhere.webhooks.test/hook", b"{}", {}, allow_private=False, timeout=2.0
    )
    assert outcome.error == "dns_error"


def test_a_slow_drip_on_a_reused_connection_is_cut_at_the_attempts_deadline(receiver):
    assert post(receiver, "/first").succeeded  # leaves its connection in the pool
    receiver.script("/drip", Reply(drip_headers=True))
    started = time.monotonic()
    outcome = post(receiver, "/drip", timeout=1.0)
    assert outcome.error == "timeout"
    assert time.monotonic() - started < 5
    assert post(receiver, "/after").succeeded  # the pool recovers from the cut connection


class RawReceiver:
    """A TCP server on 127.0.0.1 answering each request with `answer(request line)`: bytes, or
    a list of bytes and pauses (seconds). Counts the connections it accepted."""

    def __init__(self, answer):
        self.answer = answer
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn, conn.makefile("rb") as reader, contextlib.suppress(OSError):
            while line := reader.readline():
                length = 0
                while (header := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                reader.read(length)
                answer = self.answer(line)
                for part in answer if isinstance(answer, list) else [answer]:
                    if isinstance(part, float):
                        time.sleep(part)
                    else:
                        conn.sendall(part)

    def close(self):
        self.sock.close()


@pytest.fixture
def raw_receiver():
    made = []

    def make(answer):
        made.append(RawReceiver(answer))
        return made[-1]

    yield make
    for server in made:
        server.close()


def raw_post(server, path, timeout=5.0):
    return transport.post(
        f"{server.url}{path}", b"{}", {}, allow_private=True, timeout=timeout
    )  # fmt: skip


def test_answers_read_to_their_end_leave_the_connection_for_the_next(raw_receiver):
    server = raw_receiver(lambda line: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    outcomes = [raw_post(server, f"/{n}") for n in range(3)]
    assert [(o.status_code, o.response_body) for o in outcomes] == [(200, "ok")] * 3
    assert server.connections == 1


def test_the_answer_after_an_interim_one_is_not_read_by_the_next_request(raw_receiver):
    """http.client takes a 102 or 103 for the final answer. The connection it came on is
    closed: the real answer that follows must not be read as the next request's, which may
    be another tenant's (pools are shared by address)."""

    def answer(line):
        if line.startswith(b"POST /a "):
            return [
                b"HTTP/1.1 102 Processing\r\n\r\n",
                0.5,
                b"HTTP/1.1 200 OK\r\nContent-Length: 23\r\n\r\nA: account 4242 charged",
            ]
        return b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 9\r\n\r\nB: failed"

    server = raw_receiver(answer)
    first = raw_post(server, "/a")
    assert (first.status_code, first.error, first.succeeded) == (102, "http_102", False)
    second = raw_post(server, "/b")
    assert (second.status_code, second.response_body) == (500, "B: failed")
    assert server.connections == 2


def test_what_came_before_a_stall_is_kept_in_the_excerpt(raw_receiver):
    server = raw_receiver(
        lambda line: (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 1000\r\n\r\n"
            b"maintenance until 02:00 UTC"
        )
    )
    outcome = raw_post(server, "/stalls", timeout=1.0)
    assert (outcome.status_code, outcome.error) == (503, "http_503")
    assert outcome.response_body == "maintenance until 02:00 UTC"


def test_malformed_response_headers_log_neither_the_urls_query_nor_the_receivers_bytes(
    raw_receiver, caplog
):
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 60000) for i in range(20))
    server = raw_receiver(
        lambda line: (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nnot a header line\r\n" + padding + b"\r\nok"
        )
    )
    with caplog.at_level("INFO"):
        outcome = raw_post(server, "/hook?token=tok_receivers_own")
    assert outcome.status_code == 200
    logged = "".join(record.getMessage() + str(record.exc_info) for record in caplog.records)
    assert "tok_receivers_own" not in logged
    assert len(logged) < 10_000


def test_a_name_that_resolves_late_is_bounded_by_the_attempts_deadline(receiver, monkeypatch):
    """getaddrinfo cannot be cancelled, and a customer's slow name server can keep it 30 s:
    the attempt waits for it no longer than its own deadline."""
    slow = threading.Event()

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "slow.webhooks.test":
            slow.wait(6)  # an authoritative server that answers late
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    started = time.monotonic()
    outcome = transport.post(
        f"http://slow.webhooks.test:{receiver.port}/hook", b"{}", {},
        allow_private=True, timeout=1.0,
    )  # fmt: skip
    took = time.monotonic() - started
    slow.set()
    assert (outcome.error, outcome.status_code) == ("dns_timeout", None)
    assert took < 4.0, took
