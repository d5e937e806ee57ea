"""The "Operators (read-only)" group: may open every page of the operators' console, may change
nothing and run no action (those need the models' `change` permissions).

Made by migrations (accounts 0002, deliveries 0005), and made again after every `migrate` and
`flush` if it is missing (`operators_group_ensure`, on post_migrate): the console's read-only
role exists wherever the schema does, whoever deleted it.
"""

from typing import Any

from django.db.models import Q

GROUP = "Operators (read-only)"
VIEWABLE = {
    "accounts": ["organization", "environment", "apikey"],
    "webhooks": ["webhookendpoint"],
    "deliveries": ["event", "delivery", "deliveryattempt", "recovery"],
    "api": ["idempotencyrecord"],
}


def operators_group_ensure(using: str = "default", **kwargs: Any) -> None:
    """The group, with the view permissions that exist by now (post_migrate is sent once per
    app, and each app's permissions are made on its own signal)."""
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.using(using).get_or_create(name=GROUP)
    viewable = Q()
    for app_label, models in VIEWABLE.items():
        codenames = [f"view_{model}" for model in models]
        viewable |= Q(content_type__app_label=app_label, codename__in=codenames)
    group.permissions.add(*Permission.objects.using(using).filter(viewable))
