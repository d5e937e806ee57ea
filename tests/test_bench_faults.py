"""The fault report's counting (bench/faults.py) and its receiver's verdicts, on hand-made
receipts: what `python -m bench.faults` publishes in docs/reliability.md rests on these."""

import time

from bench.faults import (
    Publish,
    Receipt,
    count,
    drain_seconds,
    expected_pairs,
    first_receipts,
    order_violations,
    retries_received,
    statuses_between,
)
from bench.receiver import verdict_of
from deliveries.signature import compute, sign

SUBSCRIPTIONS = {"/all": None, "/judgments": ("judgment.created",), "/o": None}


def publish(event_id: str, started: float, returned: float, type_: str = "judgment.created"):
    return Publish(event_id, type_, started, returned)


def test_expected_pairs_follow_each_endpoints_subscription():
    published = [publish("e1", 0, 1), publish("e2", 1, 2, "packet.created")]
    assert expected_pairs(published, SUBSCRIPTIONS) == {
        ("e1", "/all"): 1,
        ("e1", "/judgments"): 1,
        ("e1", "/o"): 1,
        ("e2", "/all"): 2,
        ("e2", "/o"): 2,
    }


def test_count_separates_received_missing_duplicate_unexpected_and_invalid():
    published = [publish("e1", 0, 1), publish("e2", 1, 2, "packet.created")]
    receipts = [
        Receipt("e1", "/all", 10),
        Receipt("e1", "/all", 11),  # a duplicate
        Receipt("e1", "/all", 12),  # and a third time: still one duplicate pair
        Receipt("e1", "/judgments", 10, "bad_signature"),  # does not count as received
        Receipt("e1", "/o", 10, "stale"),  # nor does a stale timestamp
        Receipt("e2", "/all", 10),
        Receipt("e2", "/o", 10),
        Receipt("e2", "/o", 13),  # a duplicate on another pair
        Receipt("e2", "/judgments", 10),  # not subscribed: unexpected
        Receipt("e9", "/all", 10),  # never confirmed: unexpected
        Receipt("e9", "/all", 11, "bad_signature"),
    ]
    counts = count(published, SUBSCRIPTIONS, receipts, "/o")
    assert counts.published == 2
    assert counts.expected_pairs == 5
    assert counts.received_pairs == 3  # e1 /all, e2 /all, e2 /o
    assert counts.missing_pairs == 2  # e1 /judgments and e1 /o: only invalid receipts
    assert counts.duplicate_pairs == 2
    assert counts.extra_receipts == 3
    assert counts.unexpected_pairs == 2
    assert counts.invalid_signatures == 2
    assert counts.stale_timestamps == 1


def test_first_receipts_take_the_earliest_valid_one_in_any_order():
    receipts = [
        Receipt("e1", "/o", 12),
        Receipt("e1", "/o", 7, "bad_signature"),
        Receipt("e1", "/o", 9),
    ]
    assert first_receipts(receipts) == {("e1", "/o"): 9}


def test_an_event_received_before_an_earlier_published_one_is_a_violation():
    a = publish("a", started=0, returned=1)
    b = publish("b", started=2, returned=3)  # published after a's call returned
    assert order_violations([a, b], {"a": 10, "b": 11}) == 0
    assert order_violations([a, b], {"a": 11, "b": 10}) == 1
    # Listed in any order, the same answer.
    assert order_violations([b, a], {"a": 11, "b": 10}) == 1


def test_overlapping_publish_calls_have_no_order():
    a = publish("a", started=0, returned=2)
    c = publish("c", started=1, returned=3)  # started while a's call was still running
    assert order_violations([a, c], {"a": 11, "c": 10}) == 0


def test_each_late_event_counts_once_against_every_earlier_one():
    events = [publish(name, started=i * 2, returned=i * 2 + 1) for i, name in enumerate("abcd")]
    # c and d overtake a and b: each counts once; a and b come in their own order.
    firsts = {"c": 10, "d": 11, "a": 12, "b": 13}
    assert order_violations(events, firsts) == 2


def test_order_counts_first_receipts_only_and_leaves_missing_events_to_missing():
    a = publish("a", started=0, returned=1)
    b = publish("b", started=2, returned=3)
    receipts = [Receipt("a", "/o", 10), Receipt("b", "/o", 11), Receipt("a", "/o", 12)]
    assert count([a, b], {"/o": None}, receipts, "/o").order_violations == 0  # a repeated head
    receipts = [
        Receipt("a", "/o", 9, "bad_signature"),
        Receipt("b", "/o", 10),
        Receipt("a", "/o", 11),
    ]
    assert count([a, b], {"/o": None}, receipts, "/o").order_violations == 1  # a's forged copy
    counts = count([a, b], {"/o": None}, [Receipt("b", "/o", 10)], "/o")
    assert (counts.order_violations, counts.missing_pairs) == (0, 1)


def test_order_is_counted_on_the_ordered_endpoint_only():
    a = publish("a", started=0, returned=1)
    b = publish("b", started=2, returned=3)
    receipts = [Receipt("b", "/all", 10), Receipt("a", "/all", 11), Receipt("a", "/o", 12)]
    receipts.append(Receipt("b", "/o", 13))
    assert count([a, b], {"/all": None, "/o": None}, receipts, "/o").order_violations == 0


def test_drain_runs_from_the_end_to_the_last_first_receipt_published_before_it():
    expected = {("a", "/x"): 1.0, ("b", "/x"): 4.0, ("c", "/x"): 9.0}
    firsts = {("a", "/x"): 2.0, ("b", "/x"): 12.0, ("c", "/x"): 30.0}
    assert drain_seconds(expected, firsts, end=5.0) == 7.0  # b, at 12; c came after the end
    assert drain_seconds(expected, {("a", "/x"): 2.0, ("b", "/x"): 4.5}, end=5.0) == 0.0
    assert drain_seconds(expected, {("a", "/x"): 2.0}, end=5.0) == float("inf")


def test_retries_received_are_accepted_receipts_of_pairs_refused_before_in_the_window():
    refused = [Receipt("a", "/f", 1, "refused"), Receipt("b", "/f", 6, "refused")]
    receipts = [
        Receipt("a", "/f", 5),  # a retry, in the window
        Receipt("a", "/g", 5),  # another endpoint: never refused
        Receipt("c", "/f", 5),  # never refused
        Receipt("b", "/f", 5),  # accepted before it was refused: not a retry of it
        Receipt("b", "/f", 7, "bad_signature"),  # not accepted
        Receipt("b", "/f", 8),  # a retry, in the window
        Receipt("b", "/f", 12),  # a retry, after the window
    ]
    assert retries_received(receipts, refused, start=4, end=10) == 2


def test_statuses_between_counts_responses_in_the_window_only():
    responses = [(1.0, "201"), (2.0, "503"), (2.5, "503"), (3.0, "error"), (9.0, "500")]
    assert statuses_between(responses, 2.0, 3.0) == {"503": 2, "error": 1}


def test_the_receiver_rejects_a_wrong_secret_a_changed_body_and_a_stale_timestamp():
    secret, body, now = "whsec_" + "a" * 32, b'{"id":"evt_1"}', time.time()
    assert verdict_of(body, sign(body, [secret]), secret, now) == "ok"
    assert verdict_of(body, sign(body, ["whsec_" + "b" * 32]), secret, now) == "bad_signature"
    assert verdict_of(body + b" ", sign(body, [secret]), secret, now) == "bad_signature"
    assert verdict_of(body, "", secret, now) == "bad_signature"
    old = int(now) - 301
    assert verdict_of(body, f"t={old},v1={compute(secret, old, body)}", secret, now) == "stale"


def test_the_receiver_records_verdicts_and_refuses_while_failing(tmp_path):
    import requests

    from bench.deliveries import Receiver

    secret, body = "whsec_" + "c" * 32, b'{"id":"evt_1"}'
    receiver = Receiver(tmp_path, {"/f": secret, "/g": secret}, [], failing_paths=["/f"])

    def post(path: str, header: str) -> int:
        headers = {"MD-Signature": header, "MD-Event-Id": "evt_1"}
        return requests.post(
            f"{receiver.url}{path}", data=body, headers=headers, timeout=5
        ).status_code

    try:
        assert post("/f", sign(body, [secret])) == 200
        receiver.toggle_failing()
        time.sleep(0.3)  # the signal is handled by the receiver's event loop
        assert post("/f", sign(body, [secret])) == 503
        assert post("/g", "t=1,v1=" + "0" * 64) == 200  # only /f fails; a forged one is answered
        receiver.toggle_failing()
        time.sleep(0.3)
        assert post("/f", sign(body, [secret])) == 200
    finally:
        got = receiver.finish()
    assert [path for _, path, _ in got["received"]] == ["/f", "/g", "/f"]
    assert got["verdicts"] == ["ok", "bad_signature", "ok"]
    assert got["invalid"] == 1
    assert [path for _, path, _ in got["refused"]] == ["/f"]
