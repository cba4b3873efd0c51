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

__all__ = ["ListenError", "bind_grpc", "listen_error", "reserve_port"]


class ListenError(OSError):
    """An address could not be listened on; the message says which, why, and what to change."""


def listen_error(address: str, what: str, flag: str, error: OSError | str) -> ListenError:
    reason = error if isinstance(error, str) else _reason(error)
    return ListenError(f"cannot listen on {address} for {what}: {reason}; change it with {flag}")


def _reason(error: OSError) -> str:
    # asyncio wraps the OS message ("error while attempting to bind on address
    # ('127.0.0.1', 9464): address already in use"); the errno says it shorter.
    return os.strerror(error.errno) if error.errno else str(error)


def _bound(address: str, shared: bool, keep: bool) -> socket.socket | str | None:
    """A socket bound to the first address ``address`` resolves to that can be bound.

    Binds as gRPC's listener will: SO_REUSEADDR, and SO_REUSEPORT only when
    ``shared`` (workers: see ``ServerConfig.grpc_options``). Like gRPC, one
    bindable address out of several (``localhost``: ::1 and 127.0.0.1) is
    enough. Returns the socket when ``keep``, else closes it and returns
    None; when none can be bound, why not.
    """
    host, port = split_host_port(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot resolve {host!r}: {e.strerror}"
    first: OSError | None = None
    for family, kind, proto, _name, sockaddr in infos:
        probe = socket.socket(family, kind, proto)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind(sockaddr)
        except OSError as e:
            probe.close()
            first = first or e
            continue
        if keep:
            return probe
        probe.close()
        return None
    return _reason(first) if first is not None else f"{host!r} resolves to no address"


def _why_not_bindable(address: str, shared: bool = False) -> str | None:
    """Why none of the addresses ``address`` resolves to can be bound now (None: one can)."""
    found = _bound(address, shared, keep=False)
    return found if isinstance(found, str) else None


def reserve_port(address: str, what: str, flag: str) -> socket.socket:
    """A socket holding ``address``'s port for workers to share; raises ``ListenError``.

    The port must be free: a port anyone holds, with SO_REUSEPORT or not, is
    refused, as by a single process. Port 0 becomes a free port, the one all
    workers bind. The socket is then bound again with SO_REUSEPORT and never
    listens: the kernel hands connections to listening sockets only, so it
    takes none, while it keeps the port for a worker that restarts.
    """
    free = _bound(address, shared=False, keep=True)
    if not isinstance(free, socket.socket):
        raise listen_error(address, what, flag, free or "no address")
    port = free.getsockname()[1]
    free.close()
    held = _bound(f"{address.rpartition(':')[0]}:{port}", shared=True, keep=True)
    if not isinstance(held, socket.socket):
        raise listen_error(address, what, flag, held or "no address")
    return held


def bind_grpc(
    server: grpc.aio.Server,
    address: str,
    credentials: grpc.ServerCredentials | None,
    *,
    shared: bool = False,
) -> int:
    """Add the listening port to ``server``; returns the bound port or raises ``ListenError``.

    The address is tried first with a plain socket, so that a busy port is
    reported with the OS's reason before gRPC's C core would log its own
    multi-line error; grpc's ``RuntimeError`` still counts when the port was
    taken in between. ``shared``: a worker's, sharing the port with the others.
    """
    what, flag = "gRPC", "--listen"
    reason = _why_not_bindable(address, shared)
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
