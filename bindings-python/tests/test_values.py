"""Python values <-> MessagePack: the same bytes rmp-serde writes for the
matching Rust types (oscloud_actors::encode)."""

from __future__ import annotations

import struct

import pytest

import oscloud

# (Python value, the bytes rmp-serde writes for the corresponding Rust value)
SAME_AS_RUST = [
    (None, b"\xc0"),  # () / None
    (True, b"\xc3"),
    (False, b"\xc2"),
    (5, b"\x05"),  # 5u8 .. 5u64: smallest encoding
    (-1, b"\xff"),
    (300, b"\xcd\x01\x2c"),
    (-300, b"\xd1\xfe\xd4"),
    (2**64 - 1, b"\xcf" + b"\xff" * 8),
    (-(2**63), b"\xd3\x80" + b"\x00" * 7),
    (1.5, b"\xcb" + struct.pack(">d", 1.5)),  # f64
    ("hello", b"\xa5hello"),  # String
    ("é", b"\xa2\xc3\xa9"),
    (b"ab", b"\xc4\x02ab"),  # serde_bytes / Bytes
    ((1, "a"), b"\x92\x01\xa1a"),  # (u8, String), or a struct as array
    ([1, 2, 3], b"\x93\x01\x02\x03"),  # Vec<u8> without serde_bytes
    ({"a": 1}, b"\x81\xa1a\x01"),  # BTreeMap<String, u8>
    ("x" * 40, b"\xd9\x28" + b"x" * 40),
]


@pytest.mark.parametrize("value,expected", SAME_AS_RUST)
def test_encoding_matches_rmp_serde(value: object, expected: bytes) -> None:
    assert oscloud.encode(value) == expected


@pytest.mark.parametrize("value,expected", SAME_AS_RUST)
def test_decoding_round_trips(value: object, expected: bytes) -> None:
    back = oscloud.decode(expected)
    if isinstance(value, tuple):
        assert back == list(value)  # arrays decode as lists
    else:
        assert back == value


def test_nested_and_binary_kinds() -> None:
    value = {"k": [1, {"deep": [b"\x00\xff", None]}], 7: 2.25}
    assert oscloud.decode(oscloud.encode(value)) == value
    assert oscloud.encode(bytearray(b"ab")) == oscloud.encode(memoryview(b"ab")) == b"\xc4\x02ab"


def test_array_map_keys_become_tuples() -> None:
    # {[1, 2]: "v"}: an array as a map key decodes as a hashable tuple.
    assert oscloud.decode(b"\x81\x92\x01\x02\xa1v") == {(1, 2): "v"}


@pytest.mark.parametrize("bad", [{1, 2}, object(), 2**64, -(2**63) - 1, 1j])
def test_unencodable_values_raise_encode_error(bad: object) -> None:
    with pytest.raises(oscloud.EncodeError):
        oscloud.encode(bad)
    assert issubclass(oscloud.EncodeError, TypeError)


def test_cycles_are_refused() -> None:
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(oscloud.EncodeError, match="nest"):
        oscloud.encode(cyclic)


@pytest.mark.parametrize("bad", [b"", b"\x92\x01", b"\xc1", b"\x05\x05", b"\xdd\xff\xff\xff\xff"])
def test_bad_bytes_raise_decode_error(bad: bytes) -> None:
    with pytest.raises(oscloud.DecodeError):
        oscloud.decode(bad)
