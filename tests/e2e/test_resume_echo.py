"""Resume does not echo a client's own emits back to it.

An emit that skipped the sender's connection (Happy's skip-sender, to avoid
echo) must not reach that client when it resumes on a new connection: the
resuming Subscribe names its previous connection id.
"""

from __future__ import annotations

import grpc

from eventrouter.v1 import events_pb2
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.support.servers import user_metadata, user_scope


def update(update_id: str, skip: str = "") -> pb.EmitRequest:
    return pb.EmitRequest(
        user_id="ann",
        update=events_pb2.UpdatePayload(
            id=update_id,
            body=events_pb2.UpdateEvent(delete_session=events_pb2.DeleteSession(session_id="s")),
        ),
        skip_connection_id=skip,
    )


async def open_stream(
    stub: pb_grpc.EventRouterServiceStub, request: pb.SubscribeRequest
) -> tuple[grpc.aio.UnaryStreamCall, pb.ConnectionOpened]:
    call = stub.Subscribe(request, metadata=user_metadata("ann"), timeout=10)
    first = await call.read()
    assert first is not grpc.aio.EOF
    return call, first.events[0].opened


async def read_update_ids(call: grpc.aio.UnaryStreamCall, until: str) -> list[str]:
    ids: list[str] = []
    while not ids or ids[-1] != until:
        message = await call.read()
        assert message is not grpc.aio.EOF
        ids += [e.update.payload.id for e in message.events if e.WhichOneof("event") == "update"]
    return ids


async def test_resume_with_previous_connection_id_skips_own_emits(
    stub: pb_grpc.EventRouterServiceStub,
) -> None:
    first, opened = await open_stream(stub, pb.SubscribeRequest(scope=user_scope()))
    start = opened.position
    await stub.Emit(update("mine", skip=opened.connection_id))  # the client's own change
    await stub.Emit(update("theirs"))
    assert await read_update_ids(first, until="theirs") == ["theirs"]
    first.cancel()

    resumed, reopened = await open_stream(
        stub,
        pb.SubscribeRequest(
            scope=user_scope(), resume_from=start, previous_connection_id=opened.connection_id
        ),
    )
    assert reopened.resume.status == pb.RESUME_STATUS_RESUMED
    assert reopened.resume.replayed == 1
    assert await read_update_ids(resumed, until="theirs") == ["theirs"]
    resumed.cancel()

    # Without naming its previous connection, a resume replays everything
    # its scope would receive, its own emit included.
    anonymous, _ = await open_stream(
        stub, pb.SubscribeRequest(scope=user_scope(), resume_from=start)
    )
    assert await read_update_ids(anonymous, until="theirs") == ["mine", "theirs"]
    anonymous.cancel()
