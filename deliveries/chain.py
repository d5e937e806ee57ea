"""The ordered chain: an ordered endpoint's next delivery, loaded while its head is in flight
and sent the moment the head succeeds, on the head's own sending thread.

An ordered endpoint holds one delivery in flight (deliveries.ordering). Waiting for the head's
recording to release the next one, then for a task and a sending thread to take it, put a
round trip and two hand-overs between thread and thread into every step of the chain.
`look_ahead` loads what each lane will release next while its head is in flight; `Ahead`
sends it as the head ends, and hands the recording what it sent, which makes it the head.
deliveries.dispatch runs both for every batch that holds ordered endpoints' heads.
"""

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from functools import partial

from deliveries import claiming, ordering, transient
from deliveries.admission import Handed, Then, Waiting
from deliveries.claiming import Claimed
from deliveries.sending import Sent

# Admits a delivery to its endpoint's slot with `then` (dispatch.Engine.admit): the future of
# its attempt, or None if the endpoint has its fill.
Admit = Callable[[Claimed, list[str], Then[Sent]], "Future[Sent] | None"]


class Ahead:
    """What a task sending ordered endpoints' deliveries one after another has loaded of the
    next ones while their heads were in flight (deliveries.ordering.peek), and sent the moment
    their heads succeeded: the next attempt starts without waiting for the head's recording,
    which releases it to this task meanwhile. A crash in between may repeat the head, as any
    crash may (at least once); the order of first receipts holds.

    The head's own sending thread sends the next one, with the endpoint's slot, as the head's
    attempt ends (`relay`, its Waiting.then); if it ends before the look ahead is loaded, the
    task does when it sees the result (`settle`). Whichever comes first decides, under the
    lock. The thread saves two hand-overs, to the task's thread and back to a sending thread
    (docs/delivery-control.md: the chain went from 0.95 of one request at a time to 1.02).

    What is loaded to go out next is followed by the cancel check from then on (Handed), as a
    delivery handed to the sending threads is: the endpoint disabled while its head is in
    flight, the next one is not sent."""

    def __init__(self, handed: Handed) -> None:
        self._lock = threading.Lock()
        self._handed = handed
        self.deliveries: dict[int, Claimed] = {}
        self.secrets: dict[int, list[str]] = {}
        self.started: dict[int, Future[Sent]] = {}
        self._heads: dict[int, int] = {}  # head delivery: its endpoint
        self._following: dict[int, int] = {}  # endpoint: its next delivery
        self._sent: dict[int, tuple[int, int]] = {}  # endpoint: (next delivery, its event)

    def take(self, delivery_ids: list[int]) -> list[Claimed] | None:
        """These deliveries as loaded ahead, if all of them were."""
        if not delivery_ids or any(pk not in self.deliveries for pk in delivery_ids):
            return None
        return [self.deliveries[pk] for pk in delivery_ids]

    def arm(
        self,
        heads: list[Claimed],
        following: dict[int, int],
        loaded: list[Claimed],
        secrets: dict[int, list[str]],
    ) -> None:
        """What the look ahead found: each head's endpoint's next delivery (`following`,
        endpoint: delivery), loaded, and its endpoint's secrets."""
        with self._lock:
            self.deliveries = {d.pk: d for d in loaded}
            for delivery in loaded:
                self._handed.add(delivery)
            self.secrets = {pk: secrets[pk] for pk in following if pk in secrets}
            self._heads = {d.pk: d.endpoint_id for d in heads}
            self._following = following

    def relay(self, head: Waiting[Sent], result: Sent) -> Waiting[Sent] | None:
        """On the head's sending thread as its attempt ends: the next delivery of its endpoint,
        to send on that thread, if it succeeded and the look ahead is loaded; in the head's
        trace."""
        with self._lock:
            following = self._next(head.delivery.pk, result)
            if following is None:
                return None
            secrets = self.secrets[following.endpoint_id]
            waiting = Waiting(following, secrets, Future(), then=self.relay, trace=head.trace)
            self.started[following.pk] = waiting.result
            return waiting

    def settle(self, results: list[Sent], admit: Admit) -> dict[int, tuple[int, int]]:
        """After the task's wait: sends the next delivery of each endpoint whose head succeeded
        and was not relayed by its thread; returns every one sent (endpoint: (delivery, its
        event)) for the recording to release. A head still in flight is not relayed after this:
        the recorder thread records it, and its recording releases the next one."""
        with self._lock:
            for result in results:
                following = self._next(result.delivery.pk, result)
                if following is not None:
                    started = admit(following, self.secrets[following.endpoint_id], self.relay)
                    if started is not None:
                        self.started[following.pk] = started
                    else:
                        del self._sent[following.endpoint_id]
            sent, self._sent, self._heads = self._sent, {}, {}
            going = {pk for pk, _ in sent.values()}
            self._handed.forget([pk for pk in self.deliveries if pk not in going])
            return sent

    def _next(self, head_id: int, result: Sent) -> Claimed | None:
        """The next delivery after this head, now decided to be sent (under the lock)."""
        endpoint_id = self._heads.pop(head_id, None)
        if endpoint_id is None or not result.outcome.succeeded:
            return None
        following = self.deliveries.get(self._following.get(endpoint_id, 0))
        if following is not None:
            self._sent[endpoint_id] = (following.pk, following.event_id)
        return following


def look_ahead(
    ahead: Ahead, live: list[Claimed], later: dict[int, datetime], secrets: dict[int, list[str]]
) -> None:
    """While ordered endpoints' heads are in flight: what their lanes will release next, loaded
    (rate-limited endpoints aside: their next delivery waits for its slot anyway)."""
    ahead.arm([], {}, [], {})  # what an earlier round loaded is not taken for this one's
    in_hand = [d for d in live if d.ordered and not d.rate_limit and d.pk not in later]
    # Of two in hand for one endpoint (its head and a test event, say) one is not its head:
    # neither is looked ahead of, and the head's recording releases what follows it.
    per_endpoint = Counter(d.endpoint_id for d in in_hand)
    heads = [d for d in in_hand if per_endpoint[d.endpoint_id] == 1]
    if not heads:
        return
    known = ordering.lanes_known(heads)
    asked = {d.endpoint_id: d.pk for d in heads}
    following = transient.retrying(partial(ordering.peek, asked, known), "looking ahead")
    if not following:
        return
    heads = [d for d in heads if d.endpoint_id in following]
    # By their events as well: PostgreSQL then plans and reads those days' partitions only.
    events = {event_id for _, event_id in following.values()}
    loaded = transient.retrying(
        partial(claiming.load, [pk for pk, _ in following.values()], None, events),
        "looking ahead",
    )
    ahead.arm(heads, {endpoint: pk for endpoint, (pk, _) in following.items()}, loaded, secrets)
