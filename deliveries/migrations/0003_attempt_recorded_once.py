"""Each attempt recorded once (see DeliveryAttempt.Meta.constraints).

Rows recorded twice before this (the same delivery, number and start time: a COMMIT whose answer
was lost, then the record written again) are deleted first, the oldest row of each kept. The
unique index then replaces attempt_by_delivery_idx, whose columns it leads with.
"""

from django.db import migrations, models

_DELETE_REPEATS = """
DELETE FROM deliveries_deliveryattempt WHERE id NOT IN (
    SELECT min(id) FROM deliveries_deliveryattempt GROUP BY delivery_id, number, started_at
)
"""


class Migration(migrations.Migration):
    dependencies = [
        ("deliveries", "0002_public_ids_without_like_indexes"),
    ]

    operations = [
        migrations.RunSQL(_DELETE_REPEATS, reverse_sql=migrations.RunSQL.noop),
        migrations.AddConstraint(
            model_name="deliveryattempt",
            constraint=models.UniqueConstraint(
                fields=("delivery", "number", "started_at"), name="attempt_recorded_once"
            ),
        ),
        migrations.RemoveIndex(
            model_name="deliveryattempt",
            name="attempt_by_delivery_idx",
        ),
    ]
