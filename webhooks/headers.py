"""An endpoint's own headers, sent on every delivery: what may be set, which values are
sensitive, how an update merges, how they are shown, and how a worker gets them back to send.

Stored as `WebhookEndpoint.headers`, name -> value, a sensitive value as {"encrypted": <token>}
(core.encryption, like signing secrets). Reads only ever show a sensitive value as MASK.
"""

import re
from collections.abc import Mapping
from typing import Any

from core import encryption
from core.errors import InvalidInput

PARAM = "headers"
MAX_HEADERS = 20
MAX_NAME_LENGTH = 100
MAX_VALUE_LENGTH = 1000
MAX_TOTAL_SIZE = 8 * 1024  # names and values, in characters (they are ASCII: bytes too)
MASK = "********"

# RFC 9110's token (tchar): the only names a header may have.
NAME_PATTERN = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"
# Printable ASCII: no CR, LF or other control character that could split or end a header.
VALUE_PATTERN = r"^[ -~]*$"
_NAME = re.compile(NAME_PATTERN)
_VALUE = re.compile(VALUE_PATTERN)

# The contract's own headers, and the ones that say how the message is framed, routed or
# connected: the sender sets them, or they would change what the receiver's server reads.
REFUSED = (
    "Host",
    "Content-Length",
    "Content-Type",
    "Content-Encoding",
    "Transfer-Encoding",
    "Connection",
    "Keep-Alive",
    "Upgrade",
    "TE",
    "Trailer",
    "User-Agent",
)
REFUSED_PREFIXES = ("Proxy-", "MD-", "webhook-")
_REFUSED_NAMES = frozenset(name.lower() for name in REFUSED)
_REFUSED_PREFIXES = tuple(prefix.lower() for prefix in REFUSED_PREFIXES)
SENSITIVE_NAMES = frozenset({"authorization", "cookie"})
SENSITIVE_WORDS = ("token", "secret", "key", "password", "signature")

Stored = dict[str, Any]  # name -> value, or {"encrypted": token} for a sensitive one


def is_refused(name: str) -> bool:
    # "_" as "-": CGI-style servers (WSGI's environ, Django's request.META) read `MD_Signature`
    # as `MD-Signature` and join the two values, which breaks the receiver's verification.
    lowered = name.lower().replace("_", "-")
    return lowered in _REFUSED_NAMES or lowered.startswith(_REFUSED_PREFIXES)


def is_sensitive(name: str) -> bool:
    lowered = name.lower()
    return lowered in SENSITIVE_NAMES or any(word in lowered for word in SENSITIVE_WORDS)


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(PARAM, f"Invalid headers: {message}.")


def _shown_name(name: object) -> str:
    return repr(str(name)[:MAX_NAME_LENGTH])


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise _invalid(f"a header name is 1 to {MAX_NAME_LENGTH} characters")
    if not _NAME.fullmatch(name):  # fullmatch: "$" alone would let a final newline by
        raise _invalid(f"{_shown_name(name)} is not an HTTP header name (an RFC 9110 token)")
    if is_refused(name):
        raise _invalid(
            f"{_shown_name(name)} cannot be set: the service sets it, or it changes how the "
            "request is framed or routed"
        )
    return name


def _check_value(name: str, value: object) -> str:
    # The value itself is never repeated in a message: it may be a credential.
    if not isinstance(value, str):
        raise _invalid(f"the value of {_shown_name(name)} must be a string, or null to remove it")
    if len(value) > MAX_VALUE_LENGTH:
        raise _invalid(f"the value of {_shown_name(name)} is over {MAX_VALUE_LENGTH} characters")
    if not _VALUE.fullmatch(value):
        raise _invalid(
            f"the value of {_shown_name(name)} must be printable ASCII, without CR, LF or other "
            "control characters"
        )
    return value


def _plain(value: Any) -> str:
    return encryption.decrypt(value["encrypted"]) if isinstance(value, dict) else str(value)


def merged(stored: Mapping[str, Any], given: object) -> Stored:
    """`stored` with `given` merged in, as it is to be stored: a name given in any case
    replaces the stored one, null removes it, a sensitive value is encrypted. The mask given for
    a sensitive name already set keeps its value (a read sent back unchanged changes nothing).

    Raises InvalidInput (param "headers") naming the first problem, never a value."""
    if not isinstance(given, Mapping):
        raise _invalid("headers must be an object of header name to value")
    result: Stored = dict(stored)
    seen: set[str] = set()
    for name, value in given.items():
        name = _check_name(name)
        lowered = name.lower()
        if lowered in seen:
            raise _invalid(f"{_shown_name(name)} is given more than once, in different cases")
        seen.add(lowered)
        previous = {n: v for n, v in result.items() if n.lower() == lowered}
        for old in previous:
            del result[old]
        if value is None:
            continue
        if value == MASK and is_sensitive(name):
            if not previous:
                raise _invalid(
                    f"{MASK!r} stands for the hidden value of {_shown_name(name)}, which is not "
                    "set; send the value itself"
                )
            result.update(previous)  # kept as it was, under its stored name
            continue
        value = _check_value(name, value)
        result[name] = {"encrypted": encryption.encrypt(value)} if is_sensitive(name) else value
    if len(result) > MAX_HEADERS:
        raise _invalid(f"at most {MAX_HEADERS} headers; this would make {len(result)}")
    size = sum(len(name) + len(_plain(value)) for name, value in result.items())
    if size > MAX_TOTAL_SIZE:
        raise _invalid(f"names and values come to {size} characters; the limit is {MAX_TOTAL_SIZE}")
    return result


def replacing(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The update (for `merged`) that leaves exactly `wanted`: a form that shows every header
    (the masked ones as MASK) and is sent back whole, as the console's is."""
    kept = {name.lower() for name in wanted}
    removed: dict[str, Any] = {name: None for name in stored if name.lower() not in kept}
    return {**removed, **wanted}


def masked(stored: Mapping[str, Any]) -> dict[str, str]:
    """The headers as every read shows them: a sensitive value as MASK."""
    return {
        name: MASK if isinstance(value, dict) or is_sensitive(name) else value
        for name, value in stored.items()
    }


def for_sending(stored: Mapping[str, Any]) -> dict[str, str]:
    """The headers as a delivery carries them, decrypted. A name that could not be set today
    is left out: the contract's own headers are never overridden, whatever is stored."""
    return {name: _plain(value) for name, value in stored.items() if not is_refused(name)}


def reencrypted(stored: Mapping[str, Any]) -> Stored:
    """The same headers with every sensitive value under the first encryption key."""
    return {
        name: {"encrypted": encryption.reencrypt(value["encrypted"])}
        if isinstance(value, dict)
        else value
        for name, value in stored.items()
    }
