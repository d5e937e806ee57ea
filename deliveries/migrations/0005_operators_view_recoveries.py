"""The read-only operators' group may open the Recoveries pages of the console too."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Operators (read-only)"


def _group_and_permission(apps):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name=GROUP).first()
    view = Permission.objects.filter(content_type__app_label="deliveries", codename="view_recovery")
    return group, view


def grant(apps, schema_editor):
    # Permissions are normally made after the last migration (post_migrate): make them now.
    app_config = apps.get_app_config("deliveries")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    group, view = _group_and_permission(apps)
    if group is not None:
        group.permissions.add(*view)


def revoke(apps, schema_editor):
    group, view = _group_and_permission(apps)
    if group is not None:
        group.permissions.remove(*view)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_operators_group"),
        ("deliveries", "0004_delivery_control"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
