"""Two watched models: saving one is how an event is published to django-webhook.

`Warmup` has webhooks of its own (as the warm-up of our bench has its own environment), so the
measured run's receiver sees only `Order` deliveries.
"""

from django.db import models


class Warmup(models.Model):
    i = models.IntegerField()

    def __str__(self) -> str:
        return f"warmup {self.i}"


class Order(models.Model):
    i = models.IntegerField()

    def __str__(self) -> str:
        return f"order {self.i}"
