import json
import re
from typing import Any, NamedTuple

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils.json import strict_constant

from api.errors import ApiError

# JSON is UTF-8 (RFC 8259 section 8.1); a charset parameter may say so, under either name.
_UTF8_NAMES = frozenset({"utf-8", "utf8"})


# How deep a body's objects and arrays may nest, the body itself being the first level: more
# than any payload needs, and far from the depth at which Python's or orjson's encoders give up
# when the body is checked, stored, or read back (an event's data in GET /v1/events).
MAX_DEPTH = 64

# A JSON string (skipped whole, so that brackets within it do not count), a key if followed by
# a colon; or a bracket.
_STRUCTURE = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")(\s*:)?|[\[\]{}]')


class _DuplicateKey(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: `{"url": "a", "url": "b"}` is ambiguous (most
    parsers keep the last, some the first), so it is refused rather than guessed."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _DuplicateKey(name)
            seen.add(name)
    return obj


class _Pairs(list[tuple[str, Any]]):
    """An object's members as given, duplicates kept: the second parse, which finds where."""


def _duplicate_at(text: str, name: str) -> list[str | int]:
    """Where the first key given twice is: its path from the body's top, the key last (the key
    alone if the body is too deep to walk)."""
    try:
        tree = json.loads(text, parse_constant=strict_constant, object_pairs_hook=_Pairs)
        return _first_duplicate(tree, []) or [name]
    except RecursionError:
        return [name]


def _first_duplicate(node: Any, path: list[str | int]) -> list[str | int] | None:
    if isinstance(node, _Pairs):
        seen: set[str] = set()
        for name, value in node:
            if name in seen:
                return [*path, name]
            seen.add(name)
            if (found := _first_duplicate(value, [*path, name])) is not None:
                return found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if (found := _first_duplicate(value, [*path, index])) is not None:
                return found
    return None


class Nesting(NamedTuple):
    too_deep: bool
    field: str | None  # the top-level key whose value is too deep, if the text is an object


def nesting(text: str) -> Nesting:
    """Whether the JSON `text` nests objects and arrays more than MAX_DEPTH levels deep (the
    whole being the first), and under which top-level key. Read from the text rather than a
    parsed form, which a deep enough text has none of."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return Nesting(too_deep=False, field=None)
    depth = 0
    field: str | None = None
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                return Nesting(too_deep=True, field=field)
        elif token in ("]", "}"):
            depth -= 1
        elif depth == 1 and match.group(2):
            try:
                field = json.loads(match.group(1))
            except ValueError:  # not JSON after all: the parse error says so
                field = None
    return Nesting(too_deep=False, field=None)


def _too_deep(field: str | None) -> ApiError:
    where = f"{field[:100]} is" if field is not None else "The request body is"
    return ApiError(
        "parameter_invalid",
        f"{where} nested too deeply: objects and arrays may nest at most {MAX_DEPTH} levels "
        "deep, counting the body.",
        param=field[:100] if field is not None else None,
    )


def _dotted(path: list[str | int]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)[1:]


class StrictJSONParser(JSONParser):
    """JSON only, UTF-8 only (any other charset is a 415), no NaN or Infinity (DRF's
    STRICT_JSON), no key twice in an object, at most MAX_DEPTH levels deep."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        request = (parser_context or {}).get("request")
        charset = request.content_params.get("charset") if request is not None else None
        if charset is not None and charset.lower() not in _UTF8_NAMES:
            raise ApiError(
                "unsupported_media_type",
                "Request bodies must be JSON in UTF-8, sent with Content-Type: application/json "
                "(and no charset, or charset=utf-8).",
            )
        try:
            text = stream.read().decode("utf-8")
            data = json.loads(text, parse_constant=strict_constant, object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            # Named by the body's field that holds it (`metadata` for a key twice in it, as
            # any other fault of that field is), the message saying where within.
            path = _duplicate_at(text, exc.name)
            param = str(path[0])[:100] if isinstance(path[0], str) else None
            where = _dotted(path)[:100]
            raise ApiError(
                "parameter_invalid", f"{where} is given more than once.", param=param
            ) from None
        except RecursionError:
            # `[[[[…` 100,000 deep fits in the body limit; DRF would let it become a 500.
            if (nested := nesting(text)).too_deep:
                raise _too_deep(nested.field) from None
            raise ParseError("JSON parse error - nested too deeply") from None
        except ValueError as exc:  # as DRF's JSONParser says it (invalid UTF-8 included)
            raise ParseError(f"JSON parse error - {exc}") from None
        if (nested := nesting(text)).too_deep:
            raise _too_deep(nested.field)
        try:
            # `"\ud800"` is valid JSON syntax but no text: it could be neither stored nor echoed.
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ParseError("JSON parse error - a string holds a lone surrogate escape") from None
        return data
