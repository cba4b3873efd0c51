"""Hand-built frames (core/wire.py) parse to the SubscribeResponse the contract defines."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from eventrouter.server.core import wire
from eventrouter.v1 import events_pb2 as ev
from eventrouter.v1 import router_service_pb2 as pb

UINT64_MAX = 2**64 - 1
offsets = st.one_of(
    st.integers(0, UINT64_MAX),
    st.sampled_from([0, 1, 127, 128, 2**32 - 1, 2**32, 2**32 + 1, 2**63, UINT64_MAX]),
)
epochs = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
ids = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)


@st.composite
def updates(draw: st.DrawFn) -> ev.UpdatePayload:
    event_id = draw(ids)
    return ev.UpdatePayload(
        id=event_id,
        seq=draw(st.integers(-(2**63), 2**63 - 1)),
        body=ev.UpdateEvent(
            new_feed_post=ev.NewFeedPost(id=event_id, cursor=draw(st.text(max_size=300)))
        ),
        created_at_ms=draw(st.integers(0, 2**62)),
    )


@settings(max_examples=300, deadline=None)
@given(offset=offsets, epoch=epochs)
def test_position_encoding_is_protobuf_encoding(offset: int, epoch: str) -> None:
    expected = pb.StreamPosition(offset=offset, epoch=epoch)
    encoded = wire.encode_position(offset, epoch)
    assert encoded == expected.SerializeToString()
    assert pb.StreamPosition.FromString(encoded) == expected


@settings(max_examples=300, deadline=None)
@given(payload=updates(), offset=offsets, epoch=epochs)
def test_update_frame_parses(payload: ev.UpdatePayload, offset: int, epoch: str) -> None:
    frame = wire.update_frame(payload.SerializeToString(), offset, epoch)
    parsed = pb.SubscribeResponse.FromString(frame)
    expected = pb.SubscribeResponse(
        events=[
            pb.StreamEvent(
                update=pb.UpdateDelivery(
                    payload=payload, position=pb.StreamPosition(offset=offset, epoch=epoch)
                )
            )
        ]
    )
    assert parsed == expected
    assert parsed.events[0].update.position.offset == offset


@settings(max_examples=100, deadline=None)
@given(
    session_id=ids,
    active_at=st.integers(0, 2**63 - 1),
    frames=st.lists(st.tuples(offsets, epochs), min_size=1, max_size=8),
)
def test_frames_concatenate_into_one_response(
    session_id: str, active_at: int, frames: list[tuple[int, str]]
) -> None:
    ephemeral = ev.EphemeralPayload(
        activity=ev.SessionActivity(session_id=session_id, active=True, active_at_ms=active_at)
    )
    heartbeat = pb.StreamEvent(heartbeat=pb.Heartbeat(server_time_ms=active_at))
    payload = ev.UpdatePayload(id="x", body=ev.UpdateEvent(delete_session=ev.DeleteSession()))
    parts = [wire.ephemeral_frame(ephemeral.SerializeToString())]
    expected = [pb.StreamEvent(ephemeral=ephemeral)]
    for offset, epoch in frames:
        parts.append(wire.update_frame(payload.SerializeToString(), offset, epoch))
        expected.append(
            pb.StreamEvent(
                update=pb.UpdateDelivery(
                    payload=payload, position=pb.StreamPosition(offset=offset, epoch=epoch)
                )
            )
        )
    parts.append(wire.event_frame(heartbeat.SerializeToString()))
    expected.append(heartbeat)
    assert pb.SubscribeResponse.FromString(b"".join(parts)) == pb.SubscribeResponse(events=expected)


def test_large_frame_lengths_use_multi_byte_varints() -> None:
    payload = ev.UpdatePayload(
        id="big",
        body=ev.UpdateEvent(new_feed_post=ev.NewFeedPost(id="big", cursor="y" * 300_000)),
    )
    frame = wire.update_frame(payload.SerializeToString(), 2**40, "epoch")
    event = pb.SubscribeResponse.FromString(frame).events[0]
    assert event.update.payload == payload
    assert event.update.position.offset == 2**40
