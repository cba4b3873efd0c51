"""What the unary calls return: small typed values, as ``subscribe`` yields.

Both clients turn the router's response messages into these at the edge, so
callers see one style everywhere: dataclasses whose fields hold the
contract's own messages where one exists (a ``StreamPosition``, a
``ConnectionScope``), never a response message that needs ``HasField`` to be
read correctly.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import routing_pb2

__all__ = ["ConnectionInfo", "EmitResult"]


@dataclass(frozen=True, slots=True)
class EmitResult:
    """What one emit did.

    ``reached``: the connections the event was queued to (in cluster mode,
    on every node, see the README). ``duplicate``: True when the emit
    repeated an earlier one within the idempotency window, so nothing was
    delivered again. ``position``: where an update sits in the user's
    stream (a subscriber that resumes after it misses nothing later); None
    for an ephemeral event, which has no position.
    """

    reached: int
    duplicate: bool
    position: pb.StreamPosition | None

    @classmethod
    def from_response(cls, response: pb.EmitResponse) -> EmitResult:
        position = None
        if response.HasField("position"):
            position = pb.StreamPosition(
                offset=response.position.offset, epoch=response.position.epoch
            )
        return cls(response.reached, response.duplicate, position)


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """One open connection of a user, as ``get_connections`` lists it."""

    connection_id: str
    scope: routing_pb2.ConnectionScope
    opened_at_ms: int
    node_id: str

    @classmethod
    def from_message(cls, info: pb.ConnectionInfo) -> ConnectionInfo:
        return cls(info.connection_id, info.scope, info.opened_at_ms, info.node_id)
