"""Properties of the MD-Signature scheme (`deliveries/signature.py`), checked with Hypothesis.

The example-based tests and the shared test vectors are in test_signature.py; here the payloads,
secrets, clocks and headers are generated. Every property runs a bounded, derandomized number
of examples, so a run in CI is the same run as on a laptop.
"""

import contextlib
import os
import string
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from deliveries.signature import SignatureVerificationError, compute, parse, sign, verify

# Per property, sized to keep CI's run within its budget; PROPERTY_EXAMPLES=2000 for a deeper
# run by hand (README: Testing).
EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "100"))
PROPERTY = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None)

payloads = st.binary(max_size=2048)
# Any string is a possible key to the HMAC; real secrets are `whsec_` + base62.
secrets = st.text(max_size=64) | st.from_regex(r"\Awhsec_[0-9A-Za-z]{24,40}\Z")
secret_lists = st.lists(secrets, min_size=1, max_size=4)
# Unix seconds from 1970 to far past 2100.
timestamps = st.integers(min_value=0, max_value=2**33)
tolerances = st.integers(min_value=1, max_value=10**6)
# What a v1 value may be if it is not the right one: hex of the right length, or any printable
# ASCII without a comma (the header's separator).
hex_signatures = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
garbage_signatures = hex_signatures | st.text(
    alphabet=sorted(set(string.printable) - set(",\t\n\r\x0b\x0c")), max_size=80
)


def expect_rejected(payload: bytes, header: str, keys: list[str], **kwargs: Any) -> None:
    with pytest.raises(SignatureVerificationError):
        verify(payload, header, keys, **kwargs)


def signatures_of(header: str) -> list[str]:
    return [item.split("=", 1)[1] for item in header.split(",") if item.startswith("v1=")]


# --- What the sender signs, the receiver accepts -----------------------------------------


@PROPERTY
@given(payload=payloads, keys=secret_lists, t=timestamps)
def test_sign_then_verify(payload, keys, t):
    header = sign(payload, keys, timestamp=t)
    assert verify(payload, header, keys, now=t) == t
    # The header is what the contract says: the timestamp, then one v1 per secret, in order.
    assert header.split(",")[0] == f"t={t}"
    assert signatures_of(header) == [compute(k, t, payload) for k in keys]


@PROPERTY
@given(payload=payloads, keys=secret_lists, t=timestamps, data=st.data())
def test_any_one_of_the_signing_secrets_verifies(payload, keys, t, data):
    header = sign(payload, keys, timestamp=t)
    mine = data.draw(st.sampled_from(keys), label="the receiver's secret")
    assert verify(payload, header, mine, now=t) == t
    # Among other secrets the receiver keeps (an old one, another endpoint's), in any order.
    others = data.draw(st.lists(secrets, max_size=3), label="other secrets")
    kept = data.draw(st.permutations([*others, mine]), label="receiver's secrets")
    assert verify(payload, header, kept, now=t) == t


@PROPERTY
@given(payload=payloads, keys=secret_lists, t=timestamps, strangers=st.lists(secrets, min_size=1))
def test_secrets_that_did_not_sign_do_not_verify(payload, keys, t, strangers):
    assume(not set(strangers) & set(keys))
    expect_rejected(payload, sign(payload, keys, timestamp=t), strangers, now=t)


@PROPERTY
@given(payload=st.text(max_size=500), keys=secret_lists, t=timestamps)
def test_a_text_payload_is_its_utf8_bytes(payload, keys, t):
    header = sign(payload.encode("utf-8"), keys, timestamp=t)
    assert verify(payload, header, keys, now=t) == t


# --- Tampering ----------------------------------------------------------------------------


@PROPERTY
@given(
    payload=st.binary(min_size=1, max_size=2048),
    keys=secret_lists,
    t=timestamps,
    data=st.data(),
)
def test_any_changed_byte_of_the_payload_fails(payload, keys, t, data):
    header = sign(payload, keys, timestamp=t)
    index = data.draw(st.integers(0, len(payload) - 1), label="index")
    flip = data.draw(st.integers(1, 255), label="xor")
    changed = payload[:index] + bytes([payload[index] ^ flip]) + payload[index + 1 :]
    expect_rejected(changed, header, keys, now=t)


@PROPERTY
@given(payload=payloads, keys=secret_lists, t=timestamps, extra=st.binary(min_size=1, max_size=8))
def test_a_longer_or_shorter_payload_fails(payload, keys, t, extra):
    header = sign(payload, keys, timestamp=t)
    expect_rejected(payload + extra, header, keys, now=t)
    expect_rejected(extra + payload, header, keys, now=t)
    if payload:
        expect_rejected(payload[:-1], header, keys, now=t)


@PROPERTY
@given(payload=payloads, keys=secret_lists, t=timestamps, data=st.data())
def test_a_changed_v1_fails(payload, keys, t, data):
    header = sign(payload, keys, timestamp=t)
    valid = signatures_of(header)
    # Change one hex digit of every v1 (each would verify on its own).
    changed = []
    for sig in valid:
        i = data.draw(st.integers(0, len(sig) - 1), label="digit")
        digit = data.draw(st.sampled_from([c for c in "0123456789abcdef" if c != sig[i]]))
        changed.append(sig[:i] + digit + sig[i + 1 :])
    tampered = ",".join([f"t={t}", *(f"v1={sig}" for sig in changed)])
    expect_rejected(payload, tampered, keys, now=t)
    # Upper case, truncated or extended hex is not the signature either.
    for variant in (
        [sig.upper() for sig in valid if sig.upper() != sig],
        [sig[:-1] for sig in valid],
        [sig + "0" for sig in valid],
    ):
        if variant:
            header = ",".join([f"t={t}", *(f"v1={sig}" for sig in variant)])
            expect_rejected(payload, header, keys, now=t)


@PROPERTY
@given(
    payload=payloads,
    keys=secret_lists,
    t=timestamps,
    scheme=st.sampled_from(["v0", "v2", "V1", "sig", ""]),
)
def test_a_removed_v1_fails(payload, keys, t, scheme):
    header = sign(payload, keys, timestamp=t)
    expect_rejected(payload, f"t={t}", keys, now=t)
    # The right digest under another scheme name is not a v1.
    expect_rejected(payload, header.replace("v1=", f"{scheme}="), keys, now=t)


@PROPERTY
@given(payload=payloads, keys=secret_lists, t=timestamps, other_t=timestamps)
def test_a_changed_timestamp_fails(payload, keys, t, other_t):
    """`t` is signed too: moving it (even within the tolerance) breaks every v1."""
    assume(other_t != t)
    v1s = signatures_of(sign(payload, keys, timestamp=t))
    header = ",".join([f"t={other_t}", *(f"v1={sig}" for sig in v1s)])
    expect_rejected(payload, header, keys, now=other_t, tolerance=10**12)


# --- The clock ----------------------------------------------------------------------------


@PROPERTY
@given(
    payload=payloads,
    keys=secret_lists,
    t=timestamps,
    tolerance=tolerances,
    beyond=st.integers(min_value=1, max_value=10**9),
    future=st.booleans(),
)
def test_a_stale_or_future_timestamp_beyond_tolerance_fails(
    payload, keys, t, tolerance, beyond, future
):
    header = sign(payload, keys, timestamp=t)
    skew = tolerance + beyond
    now = t - skew if future else t + skew  # the receiver's clock
    expect_rejected(payload, header, keys, tolerance=tolerance, now=now)
    # Also with a clock that has a fraction of a second.
    expect_rejected(payload, header, keys, tolerance=tolerance, now=now + (-0.5 if future else 0.5))


@PROPERTY
@given(
    payload=payloads,
    keys=secret_lists,
    t=timestamps,
    tolerance=tolerances,
    data=st.data(),
)
def test_a_timestamp_within_tolerance_passes(payload, keys, t, tolerance, data):
    header = sign(payload, keys, timestamp=t)
    skews = [
        -tolerance,  # the edges, exactly
        tolerance,
        data.draw(st.integers(-tolerance, tolerance), label="skew"),
        data.draw(st.floats(-tolerance, tolerance), label="fractional skew"),
    ]
    for skew in skews:
        assert verify(payload, header, keys, tolerance=tolerance, now=t + skew) == t


@PROPERTY
@given(payload=payloads, keys=secret_lists, t=timestamps)
def test_the_default_tolerance_is_five_minutes(payload, keys, t):
    header = sign(payload, keys, timestamp=t)
    assert verify(payload, header, keys, now=t + 300) == t
    assert verify(payload, header, keys, now=t - 300) == t
    expect_rejected(payload, header, keys, now=t + 301)
    expect_rejected(payload, header, keys, now=t - 301)


# --- Several v1 values ----------------------------------------------------------------------


@PROPERTY
@given(
    payload=payloads,
    key=secrets,
    t=timestamps,
    garbage=st.lists(garbage_signatures, min_size=1, max_size=6),
    data=st.data(),
)
def test_one_valid_v1_among_garbage_passes(payload, key, t, garbage, data):
    valid = signatures_of(sign(payload, [key], timestamp=t))[0]
    position = data.draw(st.integers(0, len(garbage)), label="position")
    v1s = [*garbage[:position], valid, *garbage[position:]]
    header = ",".join([f"t={t}", *(f"v1={sig}" for sig in v1s)])
    assert verify(payload, header, key, now=t) == t
    # Only garbage: rejected.
    assume(valid not in garbage)
    only_garbage = ",".join([f"t={t}", *(f"v1={sig}" for sig in garbage)])
    expect_rejected(payload, only_garbage, key, now=t)


@PROPERTY
@given(payload=payloads, keys=secret_lists, t=timestamps, data=st.data())
def test_header_items_may_be_reordered_and_spaced(payload, keys, t, data):
    """Receivers see the header as sent, but proxies may re-space it; items are unordered."""
    items = sign(payload, keys, timestamp=t).split(",")
    shuffled = data.draw(st.permutations(items), label="order")
    spaces = data.draw(st.sampled_from(["", " ", "  "]), label="spacing")
    header = f",{spaces}".join(shuffled)
    assert verify(payload, header, keys, now=t) == t


# --- Whatever the header says, the only failure is SignatureVerificationError ---------------


def verify_arbitrary(payload: bytes, header: str, keys: list[str], **kwargs: Any) -> None:
    """verify() returns an int or raises SignatureVerificationError, and nothing else."""
    try:
        result = verify(payload, header, keys, **kwargs)
    except SignatureVerificationError:
        return
    assert isinstance(result, int)


@settings(PROPERTY, max_examples=EXAMPLES * 2)
@given(payload=payloads, header=st.text(max_size=300), keys=secret_lists, now=timestamps)
def test_arbitrary_text_headers_raise_only_signature_errors(payload, header, keys, now):
    verify_arbitrary(payload, header, keys, now=now)
    verify_arbitrary(payload, header, keys)  # the real clock


@settings(PROPERTY, max_examples=EXAMPLES * 2)
@given(
    payload=payloads,
    header=st.lists(
        st.tuples(
            st.sampled_from(["t", "v1", "v0", " t", "v1 "]) | st.text(max_size=5),
            st.sampled_from(["=", "", "=="]),
            st.integers(0, 2**40).map(str) | st.text(alphabet=string.hexdigits, max_size=70),
        ).map("".join),
        max_size=6,
    ).map(",".join),
    keys=secret_lists,
    now=timestamps,
)
def test_header_shaped_text_raises_only_signature_errors(payload, header, keys, now):
    """Headers that look almost right (ASCII values): parsed all the way, never crash."""
    verify_arbitrary(payload, header, keys, now=now)
    parse_result = None
    with contextlib.suppress(SignatureVerificationError):
        parse_result = parse(header)
    if parse_result is not None:
        t, v1s = parse_result
        assert isinstance(t, int)
        assert v1s


# A header with a plausible `t` and any text at all as its values.
any_value_headers = st.tuples(
    st.one_of(
        st.integers(0, 2**33).map(str),
        # Past what a float holds (~1e308), and past int()'s 4300 digits.
        st.text(alphabet="0123456789", min_size=310, max_size=5000),
    ),
    st.lists(st.text(alphabet=st.characters(exclude_characters=","), max_size=70), max_size=4),
).map(lambda parts: ",".join([f"t={parts[0]}", *(f"v1={v}" for v in parts[1])]))


@settings(PROPERTY, max_examples=EXAMPLES * 2)
@given(payload=payloads, header=any_value_headers, keys=secret_lists)
def test_any_header_raises_only_signature_errors(payload, header, keys):
    verify_arbitrary(payload, header, keys)
    # A tolerance wide enough that the v1 values get compared, whatever `t` is.
    verify_arbitrary(payload, header, keys, tolerance=10**10)


def test_non_ascii_v1_is_a_signature_error():
    header = sign(b"{}", ["whsec_k"], timestamp=1_000)
    expect_rejected(b"{}", "t=1000,v1=\u00e9", ["whsec_k"], now=1_000)
    # One valid v1 among garbage passes, whatever the garbage.
    valid = signatures_of(header)[0]
    assert verify(b"{}", f"t=1000,v1=\u00e9,v1={valid}", ["whsec_k"], now=1_000) == 1_000


def test_huge_timestamp_is_a_signature_error():
    expect_rejected(b"{}", "t=" + "9" * 400 + ",v1=00", ["whsec_k"])


def test_overlong_timestamp_is_a_signature_error():
    expect_rejected(b"{}", "t=" + "1" * 5000 + ",v1=00", ["whsec_k"])
