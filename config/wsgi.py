import os

from django.core.handlers.wsgi import WSGIRequest
from django.core.wsgi import get_wsgi_application

from core import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")


class Utf8Request(WSGIRequest):
    """A request whose query string and form fields are read as UTF-8 (DEFAULT_CHARSET),
    whatever charset its Content-Type names.

    Django would decode them with that charset, and one that is no text encoding (`rot13`,
    `base64`) raises while the request is being built, before any middleware can answer: a
    bare 500 from gunicorn, without a request id. A body's charset is judged where the body is
    read (api.parsers).
    """

    @property
    def encoding(self) -> str | None:
        return None  # Django's documented meaning: DEFAULT_CHARSET

    @encoding.setter
    def encoding(self, value: str | None) -> None:
        pass  # set only from the Content-Type's charset, which says nothing of the query


# Before the application loads its middleware: Django's instrumentation adds its own first.
tracing.setup()
application = get_wsgi_application()
application.request_class = Utf8Request
