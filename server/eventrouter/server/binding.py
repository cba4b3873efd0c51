"""Binding the node's two listening addresses, with one clear line when that fails.

A node that cannot have its address must not start: a busy gRPC port would
otherwise end in grpc's ``RuntimeError: Failed to bind`` traceback (after its
C core logged a line of its own), and a busy metrics port used to leave a
node running whose status page was another process's. ``ListenError`` is an
``OSError`` whose message names the address, the reason and the flag to
change; ``eventrouter serve`` prints it as its only line and exits 1.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import grpc

from eventrouter.server.ops.http import split_host_port

__all__ = ["ListenError", "bind_grpc", "listen_error"]


class ListenError(OSError):
    """An address could not be listened on; the message says which, why, and what to change."""


def listen_error(address: str, what: str, flag: str, error: OSError | str) -> ListenError:
    reason = error if isinstance(error, str) else _reason(error)
    return ListenError(f"cannot listen on {address} for {what}: {reason}; change it with {flag}")


def _reason(error: OSError) -> str:
    # asyncio wraps the OS message ("error while attempting to bind on address
    # ('127.0.0.1', 9464): address already in use"); the errno says it shorter.
    return os.strerror(error.errno) if error.errno else str(error)


def _why_not_bindable(address: str) -> str | None:
    """Why none of the addresses ``address`` resolves to can be bound now (None: one can).

    Binds as gRPC's listener will (SO_REUSEADDR, no SO_REUSEPORT: see
    ``ServerConfig.grpc_options``) and lets go at once. Like gRPC, one bindable
    address out of several (``localhost``: ::1 and 127.0.0.1) is enough.
    """
    host, port = split_host_port(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot resolve {host!r}: {e.strerror}"
    first: OSError | None = None
    for family, kind, proto, _name, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as e:
                first = first or e
            else:
                return None
    return _reason(first) if first is not None else f"{host!r} resolves to no address"


def bind_grpc(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None
) -> int:
    """Add the listening port to ``server``; returns the bound port or raises ``ListenError``.

    The address is tried first with a plain socket, so that a busy port is
    reported with the OS's reason before gRPC's C core would log its own
    multi-line error; grpc's ``RuntimeError`` still counts when the port was
    taken in between.
    """
    what, flag = "gRPC", "--listen"
    reason = _why_not_bindable(address)
    if reason is not None:
        raise listen_error(address, what, flag, reason)
    add: Callable[[], int] = (
        (lambda: server.add_insecure_port(address))
        if credentials is None
        else (lambda: server.add_secure_port(address, credentials))
    )
    try:
        port = add()
    except RuntimeError:
        port = 0
    if port == 0:
        raise listen_error(address, what, flag, "grpc could not bind it")
    return port
