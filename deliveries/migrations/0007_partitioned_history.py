"""History partitioned by event id on PostgreSQL (deliveries.partitions); SQLite keeps plain
tables.

Attempts get their delivery's event id, the key the three tables are split by. Constraints a
partitioned table cannot have go first on every database, so that the models say the same
everywhere: the public ids' unique constraints become plain indexes, and the foreign keys
between the history tables are the ORM's alone. Then, on PostgreSQL, each table is rebuilt as
a partitioned one: its rows are copied into partition `p0`, which ends at today's first event id
(deliveries.partitions makes the days from there), and its keys and indexes are made again from
the models. Reversed, the tables are rebuilt plain the same way.
"""

import django.db.models.deletion
from django.db import migrations, models
from django.utils import timezone

from deliveries.partitions import SPAN, day_number

_FILL_EVENT = """
UPDATE deliveries_deliveryattempt SET event_id = (
    SELECT d.event_id FROM deliveries_delivery d WHERE d.id = deliveries_deliveryattempt.delivery_id
)
"""
# Each table by what it is partitioned by, in the order they are made.
_KEYS = {"Event": "id", "Delivery": "event_id", "DeliveryAttempt": "event_id"}


def _rebuild(apps, schema_editor, *, partitioned: bool) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    history = [apps.get_model("deliveries", name) for name in _KEYS]
    first = day_number(timezone.now()) * SPAN
    with schema_editor.connection.cursor() as cursor:
        for model in history:
            table, key = model._meta.db_table, _KEYS[model.__name__]
            cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
            split = f" PARTITION BY RANGE ({key})" if partitioned else ""
            cursor.execute(
                f"CREATE TABLE {table} (LIKE {table}_old INCLUDING DEFAULTS INCLUDING IDENTITY"
                f" INCLUDING CONSTRAINTS){split}"
            )
            if partitioned:
                cursor.execute(
                    f"CREATE TABLE {table}_p0 PARTITION OF {table}"
                    f" FOR VALUES FROM (MINVALUE) TO ({first})"
                )
            cursor.execute(f"INSERT INTO {table} SELECT * FROM {table}_old")  # noqa: S608
        for model in reversed(history):
            cursor.execute(f"DROP TABLE {model._meta.db_table}_old CASCADE")
        for model in history:
            table, key = model._meta.db_table, _KEYS[model.__name__]
            primary = "id" if key == "id" or not partitioned else f"id, {key}"
            cursor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({primary})")
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'),"
                f" (SELECT coalesce(max(id), 0) + 1 FROM {table}), false)",  # noqa: S608
                [table],
            )
            for field in model._meta.concrete_fields:
                if field.remote_field and field.db_constraint:
                    target = field.remote_field.model._meta
                    cursor.execute(
                        f"ALTER TABLE {table} ADD CONSTRAINT {table}_{field.column}_fk"
                        f" FOREIGN KEY ({field.column}) REFERENCES {target.db_table}"
                        f" ({target.pk.column}) DEFERRABLE INITIALLY DEFERRED"
                    )
    for model in history:
        for index in model._meta.indexes:
            schema_editor.add_index(model, index)
        for constraint in model._meta.constraints:
            if isinstance(constraint, models.UniqueConstraint):
                schema_editor.add_constraint(model, constraint)


def _history_key(to: str, related_name: str, *, null: bool = False) -> models.ForeignKey:
    """A key between history tables: the ORM's alone, none in the database."""
    return models.ForeignKey(
        db_constraint=False,
        db_index=False,
        null=null,
        on_delete=django.db.models.deletion.CASCADE,
        related_name=related_name,
        to=to,
    )


def partition(apps, schema_editor):
    _rebuild(apps, schema_editor, partitioned=True)


def unpartition(apps, schema_editor):
    _rebuild(apps, schema_editor, partitioned=False)


class Migration(migrations.Migration):
    dependencies = [
        ("deliveries", "0006_recovery_paced_until"),
    ]

    operations = [
        migrations.AddField(
            model_name="deliveryattempt",
            name="event",
            field=_history_key("deliveries.event", "+", null=True),
        ),
        migrations.RunSQL(_FILL_EVENT, reverse_sql=migrations.RunSQL.noop),
        migrations.AlterField(
            model_name="deliveryattempt",
            name="event",
            field=_history_key("deliveries.event", "+"),
        ),
        migrations.AlterField(
            model_name="deliveryattempt",
            name="delivery",
            field=_history_key("deliveries.delivery", "attempts"),
        ),
        migrations.AlterField(
            model_name="delivery",
            name="event",
            field=_history_key("deliveries.event", "deliveries"),
        ),
        migrations.RemoveConstraint(model_name="deliveryattempt", name="attempt_recorded_once"),
        migrations.AddConstraint(
            model_name="deliveryattempt",
            constraint=models.UniqueConstraint(
                fields=("delivery", "number", "started_at", "event"), name="attempt_recorded_once"
            ),
        ),
        migrations.RemoveConstraint(model_name="event", name="event_public_id_key"),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["public_id"], name="event_public_id_idx"),
        ),
        migrations.RemoveConstraint(model_name="delivery", name="delivery_public_id_key"),
        migrations.AddIndex(
            model_name="delivery",
            index=models.Index(fields=["public_id"], name="delivery_public_id_idx"),
        ),
        migrations.RunPython(partition, unpartition),
    ]
