"""The peer's side of a run, in the peer venv: `prepare` the database, then `publish` events.

    python -m bench.peer.site.producer prepare ENDPOINTS WARM_URL MAIN_URL
    python -m bench.peer.site.producer publish WARMUP EVENTS

`prepare` migrates the fresh database and makes ENDPOINTS webhooks per watched model, each with
its topic and a secret, as django-webhook's quickstart does. `publish` saves WARMUP `Warmup`
rows, says so on stdout, waits for "go" on stdin (the orchestrator has seen their deliveries
recorded), then saves EVENTS `Order` rows as fast as one process can and prints when it started
and finished: the warm-up and the measured run share one process, as in bench/deliveries.py.
Every save is its own transaction (autocommit); django-webhook's post_save handler queues one
Celery task per webhook.
"""

import json
import secrets
import sys
import time
from typing import Any


def prepare(endpoints: int, warm_url: str, main_url: str) -> None:
    from django.core.management import call_command
    from django_webhook.models import (
        Webhook,
        WebhookSecret,
        WebhookTopic,
        populate_topics_from_settings,
    )

    call_command("migrate", interactive=False, verbosity=0)
    populate_topics_from_settings()  # its AppConfig.ready() ran before the tables existed
    for model, base, prefix in (("Warmup", warm_url, "w"), ("Order", main_url, "e")):
        topic = WebhookTopic.objects.get(name=f"peer.{model}/create")
        for i in range(endpoints):
            webhook = Webhook.objects.create(url=f"{base}/{prefix}{i}")
            webhook.topics.set([topic])
            WebhookSecret.objects.create(webhook=webhook, token=secrets.token_urlsafe(32))


def publish(warmup: int, events: int) -> None:
    from bench.peer.site.models import Order, Warmup

    for i in range(warmup):
        Warmup.objects.create(i=i)
    _say({"warm_published": warmup})
    if sys.stdin.readline().strip() != "go":
        return  # the orchestrator went away
    started = time.time()
    for i in range(events):
        Order.objects.create(i=i)
    _say({"started": started, "published": time.time()})


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def main(argv: list[str]) -> int:
    import django

    django.setup()
    if argv[0] == "prepare":
        prepare(int(argv[1]), argv[2], argv[3])
    elif argv[0] == "publish":
        publish(int(argv[1]), int(argv[2]))
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
