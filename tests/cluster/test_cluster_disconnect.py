"""Disconnect reaches every node: two secure nodes in this process share one Redis.

A stream held by node B is ended by a Disconnect sent to node A, for each
selector, while B's other streams keep receiving; a revoked token is refused
by B afterwards too.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from eventrouter.server import RouterServer
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.conftest import require_tool
from tests.security.helpers import (
    Keys,
    bearer,
    connect,
    eventually,
    expect_markers,
    machine_scope,
    marker_emit,
    open_stream,
    secure_server,
    session_scope,
    subscribe_error,
    user_scope,
)
from tests.support.redis import REDIS_CLI, REDIS_SERVER, redis_server


@contextlib.asynccontextmanager
async def two_nodes(
    keys_file: Path,
) -> AsyncIterator[
    tuple[pb_grpc.EventRouterServiceStub, pb_grpc.EventRouterServiceStub, RouterServer]
]:
    require_tool(REDIS_SERVER is not None and REDIS_CLI is not None, "redis-server and redis-cli")
    with redis_server() as redis:
        async with (
            secure_server(keys_file, broker=redis.url, node_id="a") as a,
            secure_server(keys_file, broker=redis.url, node_id="b") as b,
            connect(a) as stub_a,
            connect(b) as stub_b,
        ):
            yield stub_a, stub_b, b


def _selector(case: str, target_connection: str, token_id: str) -> pb.DisconnectRequest:
    if case == "user_id":
        return pb.DisconnectRequest(user_id="alice", reason="account closed")
    if case == "connection_id":
        return pb.DisconnectRequest(connection_id=target_connection, reason="kicked")
    if case == "machine":
        return pb.DisconnectRequest(
            machine=pb.MachineSelector(user_id="alice", machine_id="m1"), reason="machine removed"
        )
    if case == "session":
        return pb.DisconnectRequest(
            session=pb.SessionSelector(user_id="alice", session_id="s1"), reason="session deleted"
        )
    return pb.DisconnectRequest(token_id=token_id, revoke=True, reason="token revoked")


@pytest.mark.parametrize("case", ["user_id", "connection_id", "machine", "session", "token_id"])
async def test_disconnect_sent_to_one_node_ends_streams_on_another(
    case: str, tmp_path: Path
) -> None:
    keys = Keys()
    keys_file = keys.write(tmp_path / "keys.json")
    service = bearer(keys.service())
    scope = {
        "machine": machine_scope("m1"),
        "session": session_scope("s1"),
    }.get(case, user_scope())
    target_token_id = "jti-target"
    target_token = keys.user("alice", token_id=target_token_id)
    async with two_nodes(keys_file) as (stub_a, stub_b, node_b):
        target = await open_stream(stub_b, target_token, scope)
        # Bystanders on B: another user, and (but for the user-wide selector)
        # another of alice's connections that the selector does not match.
        bob = await open_stream(stub_b, keys.user("bob"))
        sibling = None
        if case != "user_id":
            sibling = await open_stream(stub_b, keys.user("alice"), session_scope("s2"))

        request = _selector(case, target.connection_id, target_token_id)
        answer = await stub_a.Disconnect(request, metadata=service)
        assert answer.disconnected == 0  # node A held none of them

        error = await target.ended()
        expected = (
            grpc.StatusCode.PERMISSION_DENIED if request.revoke else grpc.StatusCode.UNAVAILABLE
        )
        assert error.code() == expected
        assert request.reason in (error.details() or "")
        await eventually(
            lambda: node_b.router.registry.get(target.connection_id) is None,
            "the target stream unregistered on node B",
        )

        # The others on B still receive (emitted through node A).
        await stub_a.Emit(marker_emit("bob", "still-here"), metadata=service)
        await expect_markers(bob, ["still-here"])
        if sibling is not None:
            await stub_a.Emit(marker_emit("alice", "sibling-here"), metadata=service)
            await expect_markers(sibling, ["sibling-here"])
            sibling.cancel()
        bob.cancel()

        if case == "token_id":
            # Revoked on every node: B refuses the token on reconnect.
            refused = await subscribe_error(stub_b, target_token, scope)
            assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
