"""Reading request frames: the header read agrees with a full decode, and so does the
decode in steps; neither builds what it skips."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marmot.engine.errors import ValidationFailed
from marmot.transport.codec import pack_rpc, unpack_rpc
from marmot.transport.rpc_frames import Unreadable, decode_in_steps, read_header

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=8)
    | st.datetimes(timezones=st.just(UTC))
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
requests = st.dictionaries(
    st.sampled_from(["id", "method", "token", "params", "x", "identity"]) | st.text(max_size=40),
    values,
    max_size=6,
)


@settings(max_examples=300)
@given(requests, st.booleans())
def test_the_header_read_agrees_with_a_full_decode(request: dict[str, Any], token: bool) -> None:
    body = pack_rpc(request)
    header = read_header(body, needs_token=token)
    full = unpack_rpc(body)

    request_id = full.get("id")
    usable = isinstance(request_id, str | int) and not isinstance(request_id, bool)
    assert header.id == (request_id if usable else None)
    checked = [("method", header.method)] + ([("token", header.token)] if token else [])
    for name, read in checked:
        given_value = full.get(name)
        if isinstance(given_value, dict | list):
            assert not isinstance(read, str)  # a container is never taken for a scalar
        else:
            assert read == given_value


@settings(max_examples=300)
@given(values)
def test_the_decode_in_steps_is_the_full_decode(value: Any) -> None:
    body = pack_rpc(value)

    assert decode_in_steps(body) == unpack_rpc(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "undecodable"),
        (b"\xc1", "undecodable"),
        (b"\x81\xa2id", "undecodable"),  # the map ends early
        (pack_rpc({"id": 1}) + b"\x00", "undecodable"),  # extra data
        (pack_rpc([1, 2]), "not_a_map"),
        (pack_rpc("id"), "not_a_map"),
    ],
)
def test_a_frame_that_is_no_map_is_unreadable_with_its_reason(body: bytes, reason: str) -> None:
    with pytest.raises(Unreadable) as unreadable:
        read_header(body, needs_token=True)
    assert unreadable.value.reason == reason


def test_params_are_skipped_unbuilt_even_when_they_would_not_decode() -> None:
    # params: a string of bad UTF-8, which a full decode refuses.
    head = msgpack.packb({"id": "r", "method": "m", "token": "t"})
    body = bytes([head[0] + 1]) + head[1:] + msgpack.packb("params")
    body += msgpack.packb("\xff".encode("latin-1"), use_bin_type=False)

    header = read_header(body, needs_token=True)

    assert (header.id, header.method, header.token) == ("r", "m", "t")
    with pytest.raises(ValidationFailed):
        unpack_rpc(body)
    with pytest.raises(ValidationFailed):
        decode_in_steps(body)


def test_reading_stops_once_the_header_is_read() -> None:
    """What follows the header keys is not even looked at (the full decode will)."""
    body = pack_rpc({"id": 7, "method": "m", "params": {}})
    truncated = body[: -len(pack_rpc({}))]  # "params" has no value: not one msgpack map

    assert read_header(truncated, needs_token=False).id == 7
    with pytest.raises(Unreadable):
        read_header(truncated, needs_token=True)
