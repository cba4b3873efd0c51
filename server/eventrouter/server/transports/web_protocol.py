"""The Connect protocol and gRPC-Web on the wire: content types, envelopes, errors, JSON.

Both carry the same messages as gRPC.  What differs is framing and how a
call ends:

* **Connect, unary** (``application/proto`` / ``application/json``): the body
  is the bare message; a failure is a non-200 HTTP status with a JSON body
  ``{"code": "invalid_argument", "message": "..."}``.
* **Connect, streaming** (``application/connect+proto`` / ``+json``): the
  request and every response message are *enveloped* (1 flag byte, 4-byte
  big-endian length, the message); the stream ends with an envelope flagged
  0x02 holding JSON ``{"error": {...}}`` (or ``{}`` when it succeeded).
* **gRPC-Web** (``application/grpc-web+proto``): enveloped both ways, and the
  status travels in a last envelope flagged 0x80 holding the trailers as
  HTTP header lines (``grpc-status: 3``, ``grpc-message: ...``).

A stream message is built from the very frames the gRPC writer sends (see
core/wire.py): binary subscribers get them behind a 5-byte prefix, JSON
subscribers get each event's JSON, made once per event and shared by every
connection that receives it.
"""

from __future__ import annotations

import enum
import functools
import json
import urllib.parse
import zlib

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from eventrouter.server.handlers import Code
from eventrouter.v1 import router_service_pb2 as pb

# Connect's code names, and the HTTP status a failed Connect unary call gets.
CONNECT_CODE = {
    Code.INVALID_ARGUMENT: "invalid_argument",
    Code.UNAUTHENTICATED: "unauthenticated",
    Code.PERMISSION_DENIED: "permission_denied",
    Code.RESOURCE_EXHAUSTED: "resource_exhausted",
    Code.UNAVAILABLE: "unavailable",
    Code.UNIMPLEMENTED: "unimplemented",
    Code.INTERNAL: "internal",
}
HTTP_STATUS = {
    Code.INVALID_ARGUMENT: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNAVAILABLE: 503,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
}
# gRPC's numeric status codes, for gRPC-Web trailers.
GRPC_STATUS = {
    Code.INVALID_ARGUMENT: 3,
    Code.PERMISSION_DENIED: 7,
    Code.RESOURCE_EXHAUSTED: 8,
    Code.UNIMPLEMENTED: 12,
    Code.INTERNAL: 13,
    Code.UNAVAILABLE: 14,
    Code.UNAUTHENTICATED: 16,
}

END_STREAM = 0x02  # Connect: the envelope ends the stream
TRAILERS = 0x80  # gRPC-Web: the envelope holds the trailers
COMPRESSED = 0x01


class Protocol(enum.Enum):
    CONNECT_UNARY = "connect-unary"
    CONNECT_STREAM = "connect-stream"
    GRPC_WEB = "grpc-web"


class Framing:
    """How one request is framed: the protocol, its codec and the response content type."""

    __slots__ = ("content_type", "json", "protocol")

    def __init__(self, protocol: Protocol, json: bool, content_type: str) -> None:
        self.protocol = protocol
        self.json = json
        self.content_type = content_type

    @property
    def enveloped(self) -> bool:
        return self.protocol is not Protocol.CONNECT_UNARY


_FRAMINGS = {
    "application/proto": Framing(Protocol.CONNECT_UNARY, False, "application/proto"),
    "application/json": Framing(Protocol.CONNECT_UNARY, True, "application/json"),
    "application/connect+proto": Framing(
        Protocol.CONNECT_STREAM, False, "application/connect+proto"
    ),
    "application/connect+json": Framing(Protocol.CONNECT_STREAM, True, "application/connect+json"),
    "application/grpc-web": Framing(Protocol.GRPC_WEB, False, "application/grpc-web+proto"),
    "application/grpc-web+proto": Framing(Protocol.GRPC_WEB, False, "application/grpc-web+proto"),
}


def framing_of(content_type: str, streaming: bool) -> Framing | None:
    """The framing a content type asks for (None: not one this server speaks).

    A unary call (Emit, ...) speaks Connect-unary or gRPC-Web; Subscribe
    speaks Connect-streaming or gRPC-Web.
    """
    framing = _FRAMINGS.get(content_type.partition(";")[0].strip().lower())
    if framing is None:
        return None
    if framing.protocol is Protocol.GRPC_WEB:
        return framing
    return framing if (framing.protocol is Protocol.CONNECT_STREAM) == streaming else None


def envelope(data: bytes, flags: int = 0) -> bytes:
    return bytes((flags,)) + len(data).to_bytes(4, "big") + data


def envelope_prefix(size: int) -> bytes:
    return b"\x00" + size.to_bytes(4, "big")


class UnsupportedEncoding(Exception):
    """A request compressed with something other than gzip (UNIMPLEMENTED)."""


class TooLarge(Exception):
    """A request (after decompression) over the size limit (RESOURCE_EXHAUSTED)."""


def open_envelope(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The one message an enveloped request carries; ValueError when it is not exactly one.

    ``encoding``: what the request's compression header names for a
    compressed envelope (flag 0x01).
    """
    if len(body) < 5:
        raise ValueError("the request is not an enveloped message")
    size = int.from_bytes(body[1:5], "big")
    if len(body) != 5 + size:
        raise ValueError("the request must be exactly one enveloped message")
    data = body[5:]
    if not body[0] & COMPRESSED:
        return data
    if encoding in (None, "", "identity"):
        raise ValueError("a compressed message, but the request names no compression")
    return decompress(data, encoding, limit)


def decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """Undo a request's gzip, refusing anything else and anything over ``limit`` inflated."""
    if encoding != "gzip":
        raise UnsupportedEncoding(f"compression {encoding!r} is not supported (gzip is)")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as e:
        raise ValueError(f"not valid gzip: {e}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise TooLarge()
    return out


def parse_request(data: bytes, kind: type[Message], as_json: bool) -> Message:
    """A request message from its bytes; ValueError naming what is wrong."""
    try:
        if as_json:
            message = kind()
            json_format.Parse(data or b"{}", message, ignore_unknown_fields=True)
            return message
        return kind.FromString(data)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError) as e:
        raise ValueError(f"not a valid {kind.DESCRIPTOR.full_name}: {e}") from None


def serialize(message: Message, as_json: bool) -> bytes:
    if as_json:
        return json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode()
    return message.SerializeToString()


# -- ends and errors ------------------------------------------------------------


def error_json(code: Code, message: str) -> bytes:
    return json.dumps({"code": CONNECT_CODE[code], "message": message}).encode()


def connect_end(code: Code | None = None, message: str = "") -> bytes:
    """The end-of-stream envelope of a Connect stream."""
    body = {} if code is None else {"error": {"code": CONNECT_CODE[code], "message": message}}
    return envelope(json.dumps(body).encode(), END_STREAM)


def grpc_web_trailers(code: Code | None = None, message: str = "") -> bytes:
    """The trailers envelope of a gRPC-Web response (status 0 when ``code`` is None)."""
    lines = f"grpc-status: {0 if code is None else GRPC_STATUS[code]}\r\n"
    if message:
        # grpc-message is percent-encoded (gRPC over HTTP/2 spec).
        lines += f"grpc-message: {urllib.parse.quote(message, safe=' ')}\r\n"
    return envelope(lines.encode(), TRAILERS)


# -- JSON subscribers ---------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def event_json(frame: bytes) -> bytes:
    """One stream frame (a ``SubscribeResponse.events`` element) as that event's JSON.

    Cached by the frame: the router hands the same bytes object to every
    recipient, and bytes cache their hash, so an event is rendered once
    however many JSON subscribers receive it.
    """
    event = pb.SubscribeResponse.FromString(frame).events[0]
    return json.dumps(json_format.MessageToDict(event), separators=(",", ":")).encode()


def response_json(frames: list[bytes]) -> bytes:
    """A ``SubscribeResponse`` of these frames, in proto3 JSON."""
    return b'{"events":[' + b",".join(map(event_json, frames)) + b"]}"
