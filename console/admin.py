"""The operators' console: the Django admin over every app, one module per app.

It stands above the apps, like the API: an endpoint's page shows its deliveries and sends a
test event, which neither `webhooks` nor `deliveries` alone could offer without importing the
other. Every change goes through a service (console.base says why).
"""

from django.contrib import admin

from console import accounts, deliveries, idempotency, webhooks
from console.base import EMPTY

admin.site.site_header = "Kinetic operators' console"
admin.site.site_title = "Kinetic console"
admin.site.index_title = "Organizations, keys, endpoints and deliveries"
admin.site.site_url = None  # the service has no site of its own to link to: "/" is a 404
admin.site.empty_value_display = EMPTY
# The app list beside every page takes a fifth of a laptop's width from the lists; the
# breadcrumbs and the index lead to the same places.
admin.site.enable_nav_sidebar = False

__all__ = ["accounts", "deliveries", "idempotency", "webhooks"]
