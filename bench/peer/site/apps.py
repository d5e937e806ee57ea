from django.apps import AppConfig


class PeerSiteConfig(AppConfig):
    """The models django-webhook watches; label `peer`, so topics read `peer.Order/create`."""

    name = "bench.peer.site"
    label = "peer"
    default_auto_field = "django.db.models.BigAutoField"
