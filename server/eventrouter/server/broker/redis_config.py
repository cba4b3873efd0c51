"""The ``--broker`` URL: which broker a node uses, and the Redis broker's settings.

Kept free of any Redis import, so validating a configuration costs nothing
and a single-node deployment never loads the Redis client; ``factory`` turns
a URL into the broker it names.

Accepted forms::

    memory://                               one node, history in the process (the default)
    redis://HOST:PORT[/DB]                  one Redis (>= 7.0) shared by every node
    redis+cluster://HOST:PORT               a Redis Cluster, reached through any of its nodes

``rediss://`` and ``rediss+cluster://`` do the same over TLS; a password goes
in the URL as ``redis://:PASSWORD@HOST:PORT/0``.  Options go in the query
string, e.g. ``redis://127.0.0.1:6379/0?timeout=0.5&presence_ttl=5``:

``timeout``           seconds a Redis call may take before the emit or open fails
                      with UNAVAILABLE (default 1)
``presence_refresh``  seconds between presence refreshes (default 10)
``presence_ttl``      seconds after which a silent node's connections vanish from
                      GetConnections (default 30; more than ``presence_refresh``)
``health_interval``   seconds between the health pings (default 1)
``prefix``            prefix of every key and channel (default ``er``): several
                      deployments can share one Redis
"""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass

MEMORY_URL = "memory://"

_SCHEMES = {"redis": False, "rediss": False, "redis+cluster": True, "rediss+cluster": True}
_FLOAT_OPTIONS = {
    "timeout": "timeout_s",
    "presence_refresh": "presence_refresh_s",
    "presence_ttl": "presence_ttl_s",
    "health_interval": "health_interval_s",
}


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where the Redis broker connects and how it times out."""

    # What redis-py is given: redis[s]://[:password@]host:port[/db], without our options.
    url: str
    cluster: bool = False
    timeout_s: float = 1.0
    presence_refresh_s: float = 10.0
    presence_ttl_s: float = 30.0
    health_interval_s: float = 1.0
    prefix: str = "er"

    @property
    def address(self) -> tuple[str, int]:
        parts = urllib.parse.urlsplit(self.url)
        assert parts.hostname is not None
        assert parts.port is not None
        return parts.hostname, parts.port


def parse_broker_url(url: str) -> RedisSettings | None:
    """The Redis settings a ``--broker`` URL names; None for ``memory://``; ValueError if bad."""
    if url == MEMORY_URL:
        return None
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(
            f"broker: expected memory://, redis://HOST:PORT/DB or redis+cluster://HOST:PORT,"
            f" got {url!r}"
        )
    cluster = _SCHEMES[scheme]
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ValueError(f"broker: {url!r} needs HOST:PORT")
    path = parts.path.strip("/")
    if path and (cluster or not path.isdigit()):
        raise ValueError(
            f"broker: {url!r}: the path must be a database number"
            + (" (none in cluster mode)" if cluster else "")
        )
    values: dict[str, float | str] = {}
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            if not value or any(c in value for c in "{}: \t\r\n"):
                raise ValueError(
                    f"broker: prefix {value!r} must be non-empty, without {{}}: or spaces"
                )
            values["prefix"] = value
            continue
        field = _FLOAT_OPTIONS.get(name)
        if field is None:
            known = ", ".join(sorted([*_FLOAT_OPTIONS, "prefix"]))
            raise ValueError(f"broker: unknown option {name!r} (known: {known})")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"broker: {name}={value!r} is not a number") from None
        if not math.isfinite(number) or number <= 0:
            raise ValueError(f"broker: {name} must be a positive number, got {value!r}")
        values[field] = number
    base_scheme = scheme.removesuffix("+cluster")
    netloc = parts.netloc
    settings = RedisSettings(
        url=urllib.parse.urlunsplit((base_scheme, netloc, f"/{path or 0}", "", "")),
        cluster=cluster,
        **values,  # type: ignore[arg-type]
    )
    if settings.presence_ttl_s <= settings.presence_refresh_s:
        raise ValueError("broker: presence_ttl must be longer than presence_refresh")
    return settings


def check_broker_url(url: str) -> None:
    """Raise ValueError unless ``url`` is a valid ``--broker`` value."""
    parse_broker_url(url)
