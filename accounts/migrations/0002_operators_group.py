"""The "Operators (read-only)" group: may open every page of the operators' console, may
change nothing and run no action (those need the models' `change` permissions)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Operators (read-only)"
VIEWABLE = {
    "accounts": ["organization", "environment", "apikey"],
    "webhooks": ["webhookendpoint"],
    "deliveries": ["event", "delivery", "deliveryattempt"],
    "api": ["idempotencyrecord"],
}


def create_group(apps, schema_editor):
    # Permissions are normally made after the last migration (post_migrate); make them now,
    # so a fresh database gets a complete group in one `migrate`.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for app_label, models in VIEWABLE.items():
        group.permissions.add(
            *Permission.objects.filter(
                content_type__app_label=app_label,
                codename__in=[f"view_{model}" for model in models],
            )
        )


def delete_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("api", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("deliveries", "0001_initial"),
        ("webhooks", "0002_webhookendpoint_consecutive_failures_and_more"),
    ]

    operations = [migrations.RunPython(create_group, delete_group)]
