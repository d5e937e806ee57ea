"""The rows bench.control's recovery workload starts from (bench/control.py): failed deliveries
made in bulk must be what the product leaves after the last retry, attempts included, or the
recovery it measures is not the product's. A change to the history's shape (its partitions by
event id) broke them once, unseen until a full run."""

import time
import uuid

import pytest
from django.utils import timezone

from bench.control import database_counts, failed_deliveries, own_sends_ratio
from deliveries import claiming, rates
from deliveries.models import Delivery, DeliveryAttempt
from deliveries.schedule import max_attempts
from tests import factories
from tests.test_rate_slots import limited_deliveries
from webhooks.models import WebhookEndpoint


@pytest.mark.django_db
def test_failed_deliveries_are_the_products_failed_deliveries_with_their_last_attempt():
    environment = factories.environment()
    client = factories.api_client(environment)
    endpoint = client.create_endpoint("https://example.com/hook")
    made, since = failed_deliveries(environment, 7)
    endpoint_id = endpoint["webhook_endpoint_id"]
    assert made.public_id == endpoint_id

    listed = client.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries?status=failed")
    assert listed.status_code == 200, listed.content
    assert len(listed.json()["data"]) == 7
    deliveries = Delivery.objects.filter(endpoint=made)
    assert {d.attempt_count for d in deliveries} == {max_attempts()}
    assert all(d.event.created_at >= since for d in deliveries)
    attempts = DeliveryAttempt.objects.filter(delivery__in=deliveries)
    assert sorted((a.delivery_id, a.event_id) for a in attempts) == sorted(
        (d.pk, d.event_id) for d in deliveries
    )


def test_its_figures_go_in_their_own_section_of_the_benchmarks_page_and_stay_there(tmp_path):
    """bench.control writes its section of docs/benchmarks.md in place of the last one, and the
    main bench's rewrite of the page keeps it."""
    import datetime as dt

    from bench import report

    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n## Headline figures\n\nrows\n\n## Method\n\n- how\n")
    figures = {
        "ordered_ratio": 0.92,
        "ordered_in_publication_order": 1.0,
        "unlimited_ratio": 0.9,
        "steady_p99_ratio": 1.04,
    }
    report.write_control_docs(report.control_markdown(figures, "python -m bench.control", 1), page)
    text = page.read_text()
    assert text.index("## Headline figures") < text.index("## Delivery control")
    assert text.index("## Delivery control") < text.index("## Method")
    assert "| ordered_ratio | 0.920 | >= 0.8 | yes |" in text
    assert "| ordered_in_publication_order | yes | yes | yes |" in text
    assert "| unlimited_ratio | 0.900 | >= 0.95 | **no** |" in text
    assert "| steady_p99_ratio | 1.04x | reported |  |" in text  # no target: reported only
    assert "recovery_ratio" not in text  # not measured in this run: no row

    again = {"ordered_ratio": 0.796, "recovery_ratio": 0.4}  # not "0.80 ... no"
    report.write_control_docs(report.control_markdown(again, "python -m bench.control", 1), page)
    text = page.read_text()
    assert text.count("## Delivery control") == 1
    assert "| ordered_ratio | 0.796 | >= 0.8 | **no** |" in text
    assert "| recovery_ratio | 0.400 | <= 1.5 | yes |" in text
    assert "unlimited_ratio" not in text

    run = report.Run("python -m bench", "default", dt.datetime.now(dt.UTC), {}, {})
    run.machine = {k: "x" for k in ("nproc", "memory", "cpu", "kernel", "python", "django")}
    run.machine |= {k: "x" for k in ("djangorestframework", "gunicorn", "psycopg")}
    run.machine |= {"postgresql": "x", "wrk": "x"}
    report.write_docs(run, page)
    assert "| recovery_ratio | 0.400 | <= 1.5 | yes |" in page.read_text()
    assert page.read_text().index("## Delivery control") < page.read_text().index("## Method")


def test_the_own_sends_estimate_prices_the_limited_sends_at_the_unlimited_11ths():
    """Session 24's full run: the others at 1,128/s alone, 1,080/s beside an unlimited 11th
    that sent 1,000 in the window, and a limited endpoint that sent 616. Its sends alone would
    leave them 1 - (48 / 1,128) x 616 / 1,000 of their speed; the median of the rounds'."""
    alone = [{"unlimited_per_s": 1128.0}, {"unlimited_per_s": 1000.0}, {"unlimited_per_s": 900.0}]
    limited = [{"eleventh_in_window": 616.0}, {"eleventh_in_window": 500.0},
               {"eleventh_in_window": 1000.0}]  # fmt: skip
    same = [
        {"unlimited_per_s": 1080.0, "eleventh_in_window": 1000.0},
        {"unlimited_per_s": 900.0, "eleventh_in_window": 1000.0},
        {"unlimited_per_s": 900.0, "eleventh_in_window": 1000.0},
    ]
    estimates = [1 - 48 / 1128 * 0.616, 1 - 0.1 * 0.5, 1.0]
    assert own_sends_ratio(alone, limited, same) == pytest.approx(sorted(estimates)[1])
    assert own_sends_ratio(alone[:1], limited[:1], same[:1]) == pytest.approx(0.9738, abs=1e-4)


@pytest.mark.django_db(transaction=True)
def test_the_database_counts_count_each_slot_statement_once(api, settings):
    """The rate workload's counters (bench.control.database_counts) read PostgreSQL's
    statistics, which its backends report after their transactions end (at most once a
    second, else within PostgreSQL's idle interval, 10 s): two batches' slot statements, the
    first of them making the endpoint's lane, are three writes of its `Lane` row."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    _, ids = limited_deliveries(api, 3)
    token = uuid.uuid4()
    claimed = claiming.claim(ids, 0, timezone.now(), token, held=False)
    before = database_counts()
    rates.slots_take([(d, token) for d in claimed[:2]])
    rates.slots_take([(d, token) for d in claimed[2:]])
    after, deadline = database_counts(), time.monotonic() + 15
    while after["lane"] - before["lane"] < 3 and time.monotonic() < deadline:
        after = database_counts()  # reported late: right after a flush, PostgreSQL waits
    assert after["lane"] - before["lane"] == 3
    assert after["commits"] - before["commits"] >= 2


@pytest.mark.django_db
def test_the_phases_deliveries_are_pending_deliveries_the_product_sends_and_lists():
    """bench.phases makes its deliveries in bulk, as a fan-out leaves them: each event with a
    pending delivery to every endpoint named, due now or when asked."""
    from datetime import timedelta

    from django.utils import timezone

    from bench.phases import due_deliveries

    environment = factories.environment()
    client = factories.api_client(environment)
    first = client.create_endpoint("https://example.com/a")
    second = client.create_endpoint("https://example.com/b")
    ids = [
        WebhookEndpoint.objects.get(public_id=e["webhook_endpoint_id"]).pk for e in (first, second)
    ]
    later = timezone.now() + timedelta(hours=1)
    events = due_deliveries(environment, ids, 3)
    spaced = due_deliveries(environment, ids[:1], 2, due=lambda i: later + i * timedelta(seconds=1))

    made = Delivery.objects.filter(event__public_id__in=events)
    assert sorted(made.values_list("endpoint_id", flat=True)) == sorted(ids * 3)
    assert {d.status for d in made} == {Delivery.Status.PENDING}
    now = timezone.now()
    assert all(d.next_attempt_at is not None and d.next_attempt_at <= now for d in made)
    assert all(d.event.fanned_out_at is not None for d in made)  # not fanned out again
    times = Delivery.objects.filter(event__public_id__in=spaced).values_list("next_attempt_at")
    assert sorted(t for (t,) in times if t) == [later, later + timedelta(seconds=1)]
    listed = client.get(f"/v1/webhook_endpoints/{first['webhook_endpoint_id']}/deliveries")
    assert listed.status_code == 200, listed.content
    assert len(listed.json()["data"]) == 5


def test_each_phase_is_judged_against_the_off_phases_on_either_side():
    """bench.phases.windows: off phases run from the chunk before to the chunk after, trimmed
    at both ends; a busy phase from its chunk's first receipt to its last; the unlimited
    receipts counted in each."""
    from bench import phases

    # Unlimited receipts: 100/s in 0-10 s, 80/s in 10-14 s (a limited phase), 100/s after.
    free = [i / 100 for i in range(1000)] + [10 + i / 80 for i in range(320)]
    free += [14 + i / 100 for i in range(1000)] + [24 + i / 90 for i in range(360)]
    free += [28 + i / 110 for i in range(1100)]
    busy = [("limited", [10.0, 12.0, 14.0]), ("same", [24.0, 26.0, 28.0])]
    made = phases.windows(busy, started=0.0, ended=39.0, unlimited=free)

    assert [w.kind for w in made] == ["off", "limited", "off", "same", "off"]
    assert (made[0].start, made[0].end) == (1.0, 9.0)
    assert (made[2].start, made[2].end) == (15.0, 23.0)
    assert (made[1].start, made[1].end) == (10.0, 14.0)
    assert [round(w.per_s) for w in made] == [100, 80, 100, 90, 110]
    assert phases.ratios(made, "limited") == [pytest.approx(made[1].per_s / 100, rel=0.02)]
    same = made[3].per_s / (made[2].per_s * made[4].per_s) ** 0.5
    assert phases.ratios(made, "same") == [pytest.approx(same)]
    assert phases.repeats(made) == [pytest.approx(1.0, rel=0.02), pytest.approx(1.1, rel=0.02)]

    with pytest.raises(phases.BenchError):  # an off phase shorter than its trims
        phases.windows([("limited", [1.5, 3.0])], started=0.0, ended=9.0, unlimited=free)
