"""Brokers: how an accepted emit reaches every node holding the user's connections.

One file for the interface (``base``), one per implementation, as in
centrifuge: ``memory`` (one process, nothing to run) and ``redis`` (many
nodes).  Both feed the same local fan-out, ``EventRouter``'s registry and
queues, so single-node and cluster share every step but this one.
``factory`` picks one for a ``--broker`` URL (parsed by ``redis_config``).
"""

from eventrouter.server.broker.base import Broker, ConnectionRecord
from eventrouter.server.broker.memory import MemoryBroker

__all__ = ["Broker", "ConnectionRecord", "MemoryBroker"]
