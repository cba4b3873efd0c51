"""Turning the errors a newcomer meets into what to do about them.

gRPC reports a plaintext client talking to a TLS server as ``UNAVAILABLE:
... Socket closed``, and the reverse as a TLS handshake failure buried in
the details; a user token sent to Emit as ``PERMISSION_DENIED: token is not
valid for this use (audience)``. Each is correct and none says which flag to
use. ``explain`` adds that, and only after a call failed: nothing here runs
on the happy path.
"""

from __future__ import annotations

import argparse
import socket
import ssl

import grpc

from eventrouter.client._calls import EventRouterError

__all__ = ["SERVICE_COMMANDS", "explain", "speaks_tls", "transport_mismatch"]

# Commands that need a service credential (the others need a subscriber's or none).
SERVICE_COMMANDS = frozenset({"emit", "connections", "disconnect"})
PROBE_TIMEOUT_S = 2.0


def speaks_tls(target: str, timeout: float = PROBE_TIMEOUT_S) -> bool | None:
    """Whether the server at ``HOST:PORT`` answers a TLS handshake (None: cannot tell).

    The handshake verifies nothing: it asks only which protocol the port
    speaks. A server that refuses us in TLS (an mTLS server wanting a client
    certificate sends an alert) still speaks it; a plaintext gRPC server
    closes the connection or answers bytes that are no TLS record.
    """
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None  # a grpc target of another form (dns:///..., unix:...): no guess
    host = host.strip("[]")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError:
        return None  # nothing listens there: the gRPC error already says so
    with raw:
        try:
            with context.wrap_socket(raw, server_hostname=host):
                return True
        except ssl.SSLError as e:
            return "ALERT" in (e.reason or "")
        except OSError:
            return False


def transport_mismatch(args: argparse.Namespace) -> str | None:
    """The fix when the client's TLS setting disagrees with the server's, else None."""
    tls = speaks_tls(args.target, min(args.timeout or PROBE_TIMEOUT_S, PROBE_TIMEOUT_S))
    if tls is True and not args.tls_ca:
        return (
            f"the server at {args.target} speaks TLS: pass --tls-ca FILE"
            " (the PEM CA that signed its certificate)"
        )
    if tls is False and args.tls_ca:
        return f"the server at {args.target} does not speak TLS: drop --tls-ca"
    return None


def explain(error: EventRouterError, args: argparse.Namespace) -> str:
    """``error`` as the CLI prints it: the status, then what to do when that is known."""
    message = str(error)
    command = args.command
    if error.code == grpc.StatusCode.UNAVAILABLE:
        mismatch = transport_mismatch(args)
        if mismatch is not None:
            return f"{mismatch} ({message})"
    elif error.code == grpc.StatusCode.PERMISSION_DENIED and "(audience)" in error.details:
        if command in SERVICE_COMMANDS:
            return (
                f"{message}: {command} needs a service token, not a subscriber's:"
                " export EVENTROUTER_TOKEN=$(eventrouter token --service)"
            )
        return (
            f"{message}: {command} needs a subscriber token, not a service token:"
            " export EVENTROUTER_TOKEN=$(eventrouter token --user USER)"
        )
    elif error.code == grpc.StatusCode.UNAUTHENTICATED and not getattr(args, "token", ""):
        kind = "--service" if command in SERVICE_COMMANDS else "--user USER"
        return (
            f"{message}: the server wants a token:"
            f" export EVENTROUTER_TOKEN=$(eventrouter token {kind})"
        )
    return message
