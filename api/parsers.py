import json
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class StrictJSONParser(JSONParser):
    """JSON only, UTF-8 only, no NaN or Infinity (DRF's STRICT_JSON)."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            # `[[[[…` 100,000 deep fits in the body limit; DRF would let it become a 500.
            raise ParseError("JSON parse error - nested too deeply") from None
        try:
            # `"\ud800"` is valid JSON syntax but no text: it could be neither stored nor echoed.
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ParseError("JSON parse error - a string holds a lone surrogate escape") from None
        return data
