"""The API's JSON, encoded by orjson: the same bytes as DRF's JSONRenderer, in a fraction of
the time (docs/architecture.md has the figures). The output is DRF's: compact, UTF-8, U+2028
and U+2029 escaped, times and other non-JSON types through DRF's own encoder (so a datetime is
written as DRF writes it). Error bodies (api.errors) use it too.

orjson does less than `json`: integers past 64 bits (an event's payload may hold one) and keys
that are not strings. For those DRF's renderer does the job, as before. (There is no indented
output to support: api.negotiation answers every client with compact JSON.)
"""

from collections.abc import Mapping
from typing import Any

import orjson
from rest_framework import renderers
from rest_framework.utils.encoders import JSONEncoder

_LINE_SEPARATORS = (b"\xe2\x80\xa8", b"\xe2\x80\xa9")  # U+2028, U+2029 in UTF-8
_ENCODER = JSONEncoder()
# Datetimes and their kin go to DRF's encoder, which formats them as DRF always has.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME


def encode(data: Any) -> bytes:
    """`data` as the API writes JSON: responses (JSONRenderer) and error bodies alike."""
    try:
        encoded = orjson.dumps(data, default=_ENCODER.default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return bytes(_DRF.render(data))
    # Valid JSON, but not valid JavaScript inside a <script>: escaped as DRF does.
    if b"\xe2\x80" in encoded:
        for raw, escaped in zip(_LINE_SEPARATORS, (b"\\u2028", b"\\u2029"), strict=True):
            encoded = encoded.replace(raw, escaped)
    return encoded


class JSONRenderer(renderers.JSONRenderer):
    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        return b"" if data is None else encode(data)


_DRF = renderers.JSONRenderer()
