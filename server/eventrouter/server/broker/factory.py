"""Which broker a node runs, from its ``--broker`` URL.

The one module that knows every broker: it imports ``memory``, ``redis`` and
``redis_config``, and none of them imports it back (``RouterServer`` does).
The Redis broker is imported only when a Redis URL asks for it, so a
single-node deployment never loads the Redis client.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from eventrouter.server.broker.base import Broker
from eventrouter.server.broker.memory import MemoryBroker
from eventrouter.server.broker.redis_config import parse_broker_url
from eventrouter.server.core.router import EventRouter

BrokerFactory = Callable[[EventRouter], Broker]


def broker_factory(url: str) -> BrokerFactory:
    """What ``RouterServer`` builds its broker with, for a ``--broker`` URL."""
    settings = parse_broker_url(url)
    if settings is None:
        return MemoryBroker
    from eventrouter.server.broker.redis import RedisBroker

    return functools.partial(RedisBroker, settings=settings)


__all__ = ["BrokerFactory", "broker_factory"]
