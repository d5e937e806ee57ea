from django.urls import path

from portal.views import activity, endpoints, session

app_name = "portal"

urlpatterns = [
    path("open/<str:token>", session.open_link, name="open"),
    path("", session.home, name="home"),
    path("endpoints/", endpoints.endpoint_list, name="endpoints"),
    path("endpoints/new", endpoints.endpoint_new, name="endpoint_new"),
    path("endpoints/<str:endpoint_id>/", endpoints.endpoint_detail, name="endpoint"),
    path("endpoints/<str:endpoint_id>/edit", endpoints.endpoint_edit, name="endpoint_edit"),
    path("endpoints/<str:endpoint_id>/toggle", endpoints.endpoint_toggle, name="endpoint_toggle"),
    path("endpoints/<str:endpoint_id>/delete", endpoints.endpoint_delete, name="endpoint_delete"),
    path("endpoints/<str:endpoint_id>/rotate", endpoints.endpoint_rotate, name="endpoint_rotate"),
    path("endpoints/<str:endpoint_id>/test", endpoints.endpoint_test, name="endpoint_test"),
    path(
        "endpoints/<str:endpoint_id>/deliveries/",
        activity.endpoint_deliveries,
        name="endpoint_deliveries",
    ),
    path("endpoints/<str:endpoint_id>/recover", activity.endpoint_recover, name="endpoint_recover"),
    path("deliveries/<str:delivery_id>/", activity.delivery, name="delivery"),
    path("deliveries/<str:delivery_id>/retry", activity.delivery_retry, name="delivery_retry"),
    path("recoveries/<str:recovery_id>/", activity.recovery, name="recovery"),
    path("events/", activity.events, name="events"),
    path("events/<str:event_id>/", activity.event, name="event"),
    path("event-types/", activity.catalog, name="catalog"),
    path("verifying/", activity.verifying, name="verifying"),
]
