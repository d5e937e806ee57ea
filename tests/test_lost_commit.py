"""An attempt is recorded once when the answer to its COMMIT is lost with the connection.

The database connection goes through a TCP proxy that forwards the PostgreSQL wire protocol
both ways until the COMMIT of the transaction recording the attempts: that COMMIT reaches the
server, which commits, and its answer reaches the proxy, which then drops the connection
instead of passing it on. The worker sees the connection die mid-COMMIT, `transient.retrying`
runs `recording.record` again on a new connection (through the proxy, no longer armed), and
that second run must find everything done: each attempt on record once, each delivery's
outcome and each endpoint's failure streak counted once.

tests/test_late_recording.py calls `_record` twice to the same end; this makes the COMMIT's
answer really go missing, through the real retry path of `dispatch.deliveries_send`. Their
metrics are counted once too: by the second run, as the first never got past its COMMIT.
"""

import selectors
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from deliveries import dispatch
from deliveries.models import Delivery, DeliveryAttempt, Lane
from deliveries.services import FirstClaim, event_fan_out, event_publish
from tests.servers import Reply
from tests.test_late_recording import assert_recorded_once
from webhooks.models import WebhookEndpoint

# Real COMMITs: the server must have committed when the answer goes missing.
pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5.0  # seconds; nothing here should take more than a fraction of that
# Untyped requests a client may send before its startup message (SSL, GSSAPI encryption).
_NEGOTIATIONS = {80877103, 80877104}


@dataclass
class _Link:
    """One client's connection and the proxy's own to the server."""

    client: socket.socket
    server: socket.socket
    started: bool = False  # the client's startup message (the one without a type) went by
    pending: bytes = b""  # the client's bytes not yet parsed into whole messages
    marked: bool = False  # the transaction ran a statement naming the armed table
    withholding: bool = False  # a marked COMMIT went to the server: its answer stays here
    withheld: bytes = b""


class CommitAnswerDropper:
    """A proxy to PostgreSQL on a free port of 127.0.0.1, run by one thread (so no locking
    between the two directions: a COMMIT is seen before any answer to it is read).

    Once `arm(table)`ed, the first COMMIT of a transaction whose statements named `table` is
    forwarded; the server's answer to it (up to ReadyForQuery) is read and kept in `withheld`
    and both sockets are closed instead: the client loses the answer to a COMMIT the server
    carried out. Then `dropped` is set and the proxy forwards everything again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.accepted = 0  # connections made through it
        self.withheld = b""  # the answer to the COMMIT, as the server sent it
        self.dropped = threading.Event()
        self.error: BaseException | None = None
        self._table: bytes | None = None
        self._lose_commit = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._waker, self._wake = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._waker, selectors.EVENT_READ)
        self._links: list[_Link] = []
        self._thread = threading.Thread(target=self._run, name="commit-answer-dropper")
        self._thread.start()

    def arm(self, table: str, *, lose: str = "answer") -> None:
        """`lose="commit"`: the COMMIT itself is dropped, not forwarded, and the server rolls
        the transaction back when the connection closes."""
        self._table = table.encode()
        self._lose_commit = lose == "commit"

    def close(self) -> None:
        self._wake.send(b"x")
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the proxy thread did not stop"
        for sock in (self._listener, self._waker, self._wake):
            sock.close()
        self._selector.close()
        assert self.error is None, f"the proxy failed: {self.error!r}"

    def _run(self) -> None:
        try:
            while True:
                for key, _ in self._selector.select():
                    if key.fileobj is self._waker:
                        return
                    if key.fileobj is self._listener:
                        self._accept()
                        continue
                    link, from_client = key.data
                    try:
                        if from_client:
                            self._from_client(link)
                        else:
                            self._from_server(link)
                    except OSError:  # either side went away: so does the other
                        self._drop(link)
        except BaseException as exc:
            self.error = exc
            raise
        finally:  # a client never waits on a proxy that is gone
            for link in self._links:
                self._drop(link)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        server = socket.create_connection(self.upstream, timeout=TIMEOUT)
        client.settimeout(TIMEOUT)
        link = _Link(client, server)
        self._links.append(link)
        self.accepted += 1
        self._selector.register(client, selectors.EVENT_READ, (link, True))
        self._selector.register(server, selectors.EVENT_READ, (link, False))

    def _from_client(self, link: _Link) -> None:
        data = link.client.recv(65536)
        if not data:
            raise ConnectionResetError
        link.pending += data
        for kind, body in self._messages(link):
            self._seen(link, kind, body)
        if link.withholding and self._lose_commit:
            self._table = None
            self.dropped.set()
            self._drop(link)
            return
        link.server.sendall(data)

    def _messages(self, link: _Link) -> Iterator[tuple[bytes, bytes]]:
        """The client's whole messages received so far: (type, body); the startup message
        and what negotiates before it have no type."""
        while True:
            typed = int(link.started)
            if len(link.pending) < typed + 4:
                return
            (length,) = struct.unpack_from("!i", link.pending, typed)
            end = typed + length
            if len(link.pending) < end:
                return
            kind, body = link.pending[:typed], link.pending[typed + 4 : end]
            link.pending = link.pending[end:]
            if not link.started and struct.unpack_from("!i", body)[0] not in _NEGOTIATIONS:
                link.started = True
            yield kind, body

    def _seen(self, link: _Link, kind: bytes, body: bytes) -> None:
        # psycopg sends COMMIT (and BEGIN) as a simple query (Q: the SQL), and so Django's
        # statements, bound on the client; a Parse (P: a name, the SQL) if they were not.
        if self._table is None or kind not in (b"Q", b"P"):
            return
        text = body.split(b"\0")[0 if kind == b"Q" else 1]
        if self._table in text:
            link.marked = True
        elif link.marked and text.strip().rstrip(b";").upper() == b"COMMIT":
            link.withholding = True

    def _from_server(self, link: _Link) -> None:
        data = link.server.recv(65536)
        if not data:
            raise ConnectionResetError
        if not link.withholding:
            link.client.sendall(data)
            return
        # The client waits for each answer before it sends on (no pipelining), so the answer
        # to the COMMIT starts here; it ends with ReadyForQuery ('Z').
        link.withheld += data
        if not _ends_with_ready(link.withheld):
            return
        self.withheld, self._table = link.withheld, None
        self.dropped.set()
        self._drop(link)

    def _drop(self, link: _Link) -> None:
        for sock in (link.client, link.server):
            if sock.fileno() != -1:
                self._selector.unregister(sock)
                sock.close()


def _ends_with_ready(answer: bytes) -> bool:
    """Whether these server messages are whole and the last is ReadyForQuery."""
    at, last = 0, b""
    while at + 5 <= len(answer):
        last = answer[at : at + 1]
        at += 1 + struct.unpack_from("!i", answer, at + 1)[0]
    return at == len(answer) and last == b"Z"


@pytest.fixture
def proxy(transactional_db):
    """The test's database connection, through a CommitAnswerDropper (same database)."""
    params = connection.settings_dict
    saved = {key: params[key] for key in ("HOST", "PORT", "OPTIONS")}
    dropper = CommitAnswerDropper((saved["HOST"] or "127.0.0.1", int(saved["PORT"] or 5432)))
    connection.close()
    # The proxy reads the protocol: no TLS (the server has none here; this keeps it so).
    params.update(
        HOST="127.0.0.1", PORT=str(dropper.port), OPTIONS={**saved["OPTIONS"], "sslmode": "disable"}
    )
    try:
        yield dropper
    finally:
        connection.close()  # no connection to the proxy outlives it
        params.update(saved)
        dropper.close()


def attempts_counted() -> dict[str, float]:
    return {
        outcome: REGISTRY.get_sample_value("kinetic_delivery_attempts_total", {"outcome": outcome})
        or 0
        for outcome in ("succeeded", "failed")
    }


def send_losing_the_commit_answer(api, receiver, proxy, settings, caplog) -> tuple[list[int], str]:
    """Two deliveries, one answered 200 and one 500, sent and recorded by the worker's own
    path; the answer to the recording's COMMIT is lost. Their ids, and the failing endpoint's."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    settings.WEBHOOKS_DATABASE_RETRY_SECONDS = TIMEOUT  # a retry that fails, fails soon
    api.create_endpoint(f"{receiver.url}/answers")
    failing = api.create_endpoint(f"{receiver.url}/fails")["webhook_endpoint_id"]
    # A failure: its endpoint's streak is what a second recording would count again.
    receiver.script("/fails", Reply(status=500))
    event = event_publish(environment=api.environment, type="packet.created", data={})
    ids = event_fan_out(event_id=event.pk)
    connection.ensure_connection()
    connected = proxy.accepted

    # Armed now: the COMMIT that records the attempts is the one whose answer goes missing.
    proxy.arm(DeliveryAttempt._meta.db_table)
    dispatch.deliveries_send(delivery_ids=ids, top_up=False, wait_for_all=True)

    assert proxy.dropped.is_set()
    # The server did commit (CommandComplete "COMMIT", then ReadyForQuery, idle)...
    assert b"C\0\0\0\x0bCOMMIT\0" in proxy.withheld
    assert proxy.withheld.endswith(b"Z\0\0\0\x05I")
    # ...and the recording was run again, on a new connection.
    retries = [r.getMessage() for r in caplog.records if r.name == "deliveries.transient"]
    assert len(retries) == 1 and retries[0].startswith("recording delivery attempts:")
    assert proxy.accepted > connected
    assert len(receiver.received()) == 2  # each delivery was sent once
    return ids, failing


def test_an_attempt_whose_commit_answer_is_lost_is_recorded_once(
    api, receiver, proxy, settings, caplog
):
    ids, failing = send_losing_the_commit_answer(api, receiver, proxy, settings, caplog)

    assert_recorded_once(ids, failing)


def test_an_attempt_whose_commit_answer_is_lost_is_counted_once(
    api, receiver, proxy, settings, caplog
):
    before = attempts_counted()

    send_losing_the_commit_answer(api, receiver, proxy, settings, caplog)

    after = attempts_counted()
    assert {outcome: after[outcome] - before[outcome] for outcome in after} == {
        "succeeded": 1,
        "failed": 1,
    }


def test_an_endpoint_disabled_by_a_transaction_that_rolled_back_is_reported_once(
    api, receiver, proxy, settings, caplog
):
    """The log line and the metric of an automatic disable come after the COMMIT: when the
    COMMIT never reaches the server (rolled back) and the recording runs again, the disable
    is reported once, by the run that committed it."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    settings.WEBHOOKS_DATABASE_RETRY_SECONDS = TIMEOUT
    gone = api.create_endpoint(f"{receiver.url}/gone")["webhook_endpoint_id"]
    receiver.script("/gone", Reply(status=410))  # disables the endpoint at once
    event = event_publish(environment=api.environment, type="packet.created", data={})
    ids = event_fan_out(event_id=event.pk)
    connection.ensure_connection()

    def disables() -> float:
        sample = {"reason": "gone"}
        return REGISTRY.get_sample_value("kinetic_endpoints_auto_disabled_total", sample) or 0

    before = disables()
    proxy.arm(DeliveryAttempt._meta.db_table, lose="commit")
    dispatch.deliveries_send(delivery_ids=ids, top_up=False, wait_for_all=True)

    assert proxy.dropped.is_set() and proxy.withheld == b""  # the COMMIT never left
    assert WebhookEndpoint.objects.get(public_id=gone).status == "disabled"
    assert DeliveryAttempt.objects.filter(delivery_id__in=ids).count() == 1
    told = [r for r in caplog.records if "disabled automatically" in r.getMessage()]
    assert len(told) == 1
    assert disables() - before == 1


def test_a_lane_release_whose_commit_answer_is_lost_still_hands_its_head_to_the_fan_out(
    api, receiver, proxy, settings, caplog
):
    """A fan-out's lane release (after the fan-out's own COMMIT) loses its COMMIT's answer:
    the server made the ordered endpoint's delivery the head, claimed by the fan-out's first
    claim. The retry finds the lane busy, so releases nothing, and must still hand that head
    to the caller to send; otherwise it waits unsent until the claim runs out."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    settings.WEBHOOKS_DATABASE_RETRY_SECONDS = TIMEOUT
    api.create_endpoint(f"{receiver.url}/ordered", delivery_order="ordered")
    event = event_publish(environment=api.environment, type="packet.created", data={})
    connection.ensure_connection()
    first = FirstClaim(token=uuid.uuid4(), until=timezone.now() + timedelta(minutes=5), count=1)

    proxy.arm(Lane._meta.db_table)
    ids = event_fan_out(event_id=event.pk, first_claim=first)

    assert proxy.dropped.is_set()
    assert b"C\0\0\0\x0bCOMMIT\0" in proxy.withheld  # the server committed the release
    retries = [r.getMessage() for r in caplog.records if r.name == "deliveries.transient"]
    assert len(retries) == 1 and retries[0].startswith("releasing ordered endpoints' lanes:")
    head = Delivery.objects.get(event_id=event.pk)
    assert head.claim_token == first.token
    assert ids == [head.pk]
    assert first.claimed == {head.pk: event.pk}
