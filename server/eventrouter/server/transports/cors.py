"""Which web pages may call the web listener: CORS with an explicit allowlist.

Nothing is allowed by default.  A request that carries an ``Origin`` (every
request a browser sends cross-origin) must name an allowed origin, or it is
refused with 403 before anything runs: a page from elsewhere cannot make a
visitor's browser emit or subscribe.  Requests without ``Origin`` (servers,
Node, curl) are not a browser's and pass.  ``*`` allows every origin; the
token still has to be valid, but prefer naming the origins.

Headers a Connect or gRPC-Web client sends, and the response headers its
runtime reads, are those connectrpc.com documents for CORS.
"""

from __future__ import annotations

from collections.abc import Iterable

ALLOWED_METHODS = b"POST, OPTIONS"
ALLOWED_REQUEST_HEADERS = frozenset(
    {
        "authorization",
        "content-type",
        "connect-protocol-version",
        "connect-timeout-ms",
        "connect-accept-encoding",
        "connect-content-encoding",
        "grpc-timeout",
        "x-grpc-web",
        "x-user-agent",
        # The insecure development mode's user id (--insecure).
        "x-eventrouter-user-id",
    }
)
EXPOSED_RESPONSE_HEADERS = (
    b"grpc-status, grpc-message, grpc-status-details-bin, content-encoding,"
    b" connect-content-encoding"
)
# How long a browser may cache a preflight's answer (seconds).
PREFLIGHT_MAX_AGE = b"7200"

Headers = list[tuple[bytes, bytes]]


class CorsPolicy:
    """An allowlist of origins (``scheme://host[:port]``, exactly), or ``*``."""

    def __init__(self, origins: Iterable[str]) -> None:
        cleaned = {o.strip().rstrip("/") for o in origins if o.strip()}
        self.any = "*" in cleaned
        self.origins = frozenset(o.lower() for o in cleaned - {"*"})

    def allows(self, origin: str) -> bool:
        return self.any or origin.lower() in self.origins

    def response_headers(self, origin: str) -> Headers:
        """Added to every response to an allowed cross-origin request."""
        return [
            (b"access-control-allow-origin", origin.encode()),
            (b"access-control-expose-headers", EXPOSED_RESPONSE_HEADERS),
            (b"vary", b"Origin"),
        ]

    def preflight_headers(self, origin: str, requested: str) -> Headers | None:
        """The answer to an allowed preflight, or None when it asks for a header not allowed."""
        asked = [h.strip().lower() for h in requested.split(",") if h.strip()]
        if any(h not in ALLOWED_REQUEST_HEADERS for h in asked):
            return None
        return [
            (b"access-control-allow-origin", origin.encode()),
            (b"access-control-allow-methods", ALLOWED_METHODS),
            (b"access-control-allow-headers", ", ".join(asked).encode()),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE),
            (b"vary", b"Origin, Access-Control-Request-Headers"),
        ]
