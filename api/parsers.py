from rest_framework.parsers import JSONParser


class StrictJSONParser(JSONParser):
    """JSON only, UTF-8 only, no NaN or Infinity (DRF's STRICT_JSON)."""

    media_type = "application/json"
