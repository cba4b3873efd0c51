"""Hand-built protobuf frames for the Subscribe stream.

An event is encoded once per emit and the same bytes go to every recipient.
A ``SubscribeResponse`` is ``repeated StreamEvent events = 1``, and protobuf
encodes a repeated message field as the concatenation of its elements, so a
"frame" here is one complete ``events`` element and the writer builds a
response carrying N events by joining N frames.  The test suite parses these
frames with the generated classes to prove they match the contract.
"""

from __future__ import annotations

import functools

_WIRE_LEN = 2  # length-delimited wire type
_ONE_BYTE = [bytes((i,)) for i in range(0x80)]


def _varint(value: int) -> bytes:
    if value < 0x80:  # most tags and short lengths: one byte
        return _ONE_BYTE[value]
    if value < 0x4000:  # a typical event's lengths: two bytes
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | _WIRE_LEN) + _varint(len(payload)) + payload


@functools.lru_cache(maxsize=1024)
def _epoch_field(epoch: str) -> bytes:
    # A user's epoch is the same for every update it numbers: encode it once.
    return _len_field(2, epoch.encode()) if epoch else b""


def encode_position(offset: int, epoch: str) -> bytes:
    """``StreamPosition{offset, epoch}`` (zero values omitted, as protobuf does)."""
    return (b"\x08" + _varint(offset) if offset else b"") + _epoch_field(epoch)


def update_frame(payload: bytes, offset: int, epoch: str) -> bytes:
    """``events[] = StreamEvent{update: UpdateDelivery{payload, position}}``.

    Written out field by field (tags 0x0a = field 1, 0x12 = field 2, both
    length-delimited): it runs once per update emitted.
    """
    position = (b"\x08" + _varint(offset) if offset else b"") + _epoch_field(epoch)
    delivery = (
        b"\x0a" + _varint(len(payload)) + payload + b"\x12" + _varint(len(position)) + position
    )
    event = b"\x12" + _varint(len(delivery)) + delivery
    return b"\x0a" + _varint(len(event)) + event


def ephemeral_frame(payload: bytes) -> bytes:
    """``events[] = StreamEvent{ephemeral: payload}``."""
    return _len_field(1, _len_field(3, payload))


def event_frame(stream_event: bytes) -> bytes:
    """Any serialized ``StreamEvent`` as one ``events`` element."""
    return _len_field(1, stream_event)
