"""Property tests: every valid payload survives the Happy JSON codec and protobuf bytes."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventrouter.client._happy_json import from_happy_json, to_happy_json
from eventrouter.client._json_values import js_number
from eventrouter.v1 import events_pb2 as pb
from tests.unit.happy_strategies import (
    EPHEMERAL_EVENTS,
    UPDATE_EVENTS,
    payloads,
    raw_ephemeral_json,
    raw_update_json,
    with_unknown_keys,
)

Payload = pb.UpdatePayload | pb.EphemeralPayload

# Per kind, so that each of the 19 kinds gets examples of its own.
KINDS = {**UPDATE_EVENTS, **EPHEMERAL_EVENTS}
EXAMPLES_PER_KIND = 40


def _case(payload: Payload) -> str | None:
    union = payload.body if isinstance(payload, pb.UpdatePayload) else payload
    return union.WhichOneof("event")


def _reparse(payload: Payload) -> Payload:
    clone = type(payload)()
    clone.ParseFromString(payload.SerializeToString())
    return clone


def _kinds(union: type[pb.UpdateEvent] | type[pb.EphemeralPayload]) -> set[str]:
    # Every oneof case is a kind, but `raw`: the carrier of the kinds not modelled.
    cases = union.DESCRIPTOR.oneofs_by_name["event"].fields
    return {case.name.replace("_", "-") for case in cases if case.name != "raw"}


def test_strategies_cover_every_kind() -> None:
    assert set(UPDATE_EVENTS) == _kinds(pb.UpdateEvent)
    assert set(EPHEMERAL_EVENTS) == _kinds(pb.EphemeralPayload)
    assert len(KINDS) == 19


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_protobuf_to_happy_json_and_back(kind: str) -> None:
    @settings(max_examples=EXAMPLES_PER_KIND, deadline=None)
    @given(KINDS[kind])
    def check(payload: Payload) -> None:
        data = to_happy_json(payload)
        # An ephemeral's `type` first: session-event has a `body` too (a string).
        assert (data["type"] if "type" in data else data["body"]["t"]) == kind
        assert from_happy_json(data) == payload

    check()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_json_text_round_trip(kind: str) -> None:
    @settings(max_examples=EXAMPLES_PER_KIND, deadline=None)
    @given(KINDS[kind])
    def check(payload: Payload) -> None:
        text = json.dumps(to_happy_json(payload))
        decoded = from_happy_json(json.loads(text))
        assert decoded == payload
        # Decoding and re-encoding reproduces the text exactly.
        assert json.dumps(to_happy_json(decoded)) == text

    check()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_unknown_keys_anywhere_render_back_exactly(kind: str) -> None:
    # Keys the contract does not model, put anywhere (between known keys, in nested
    # objects, in GitHub's profile), come back where they were: same text.
    @settings(max_examples=EXAMPLES_PER_KIND // 2, deadline=None)
    @given(KINDS[kind], st.data())
    def check(payload: Payload, data: st.DataObject) -> None:
        sent = data.draw(with_unknown_keys(to_happy_json(payload)))
        text = json.dumps(sent)
        decoded = from_happy_json(json.loads(text))
        assert json.dumps(to_happy_json(decoded)) == text
        assert json.dumps(to_happy_json(_reparse(decoded))) == text
        assert _case(decoded) == kind.replace("-", "_")  # still the typed kind

    check()


@settings(max_examples=100, deadline=None)
@given(raw_update_json() | raw_ephemeral_json())
def test_unknown_kinds_render_back_exactly(sent: dict[str, object]) -> None:
    text = json.dumps(sent)
    decoded = from_happy_json(json.loads(text))
    assert _case(decoded) == "raw"
    raw = decoded.body.raw if isinstance(decoded, pb.UpdatePayload) else decoded.raw
    assert raw.kind == (sent["type"] if "type" in sent else sent["body"]["t"])  # type: ignore[index]
    assert json.dumps(to_happy_json(decoded)) == text
    assert json.dumps(to_happy_json(_reparse(decoded))) == text


@settings(max_examples=300, deadline=None)
@given(payloads)
def test_protobuf_bytes_round_trip(payload: Payload) -> None:
    assert _reparse(payload) == payload


@settings(max_examples=150, deadline=None)
@given(payloads)
def test_happy_json_text_survives_protobuf_bytes(payload: Payload) -> None:
    # Object keys inside google.protobuf.Value come out in canonical order, so
    # the text does not depend on the map's hash order before or after a parse.
    assert json.dumps(to_happy_json(_reparse(payload))) == json.dumps(to_happy_json(payload))


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_integral_numbers_print_as_integers(number: int) -> None:
    payload = pb.EphemeralPayload(
        usage=pb.Usage(session_id="s", key="k", tokens=[pb.UsageEntry(key="n", value=number)])
    )
    assert json.dumps(to_happy_json(payload)["tokens"]) == f'{{"n": {number}}}'


def _tricky_doubles(count: int) -> list[float]:
    """Doubles of every shape: random bit patterns, big integers, powers, fractions."""
    rng = random.Random(20251124)
    out = [2.0**e for e in range(-60, 80)] + [10.0**e for e in range(-12, 25)]
    out += [0.0, 5e-324, 1.7976931348623157e308, 2.0**53 + 2, 0.1 + 0.2]
    while len(out) < count:
        (x,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if math.isfinite(x):
            out.append(x)
        out.append(float(rng.randrange(-(2**70), 2**70)))
        out.append(rng.randrange(1, 10**6) / 10 ** rng.randrange(0, 9))
    return [-x if i % 3 == 0 else x for i, x in enumerate(out)]


def test_js_number_prints_like_javascript() -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is needed to compare with JSON.stringify")
        pytest.skip("node is not installed")
    numbers = _tricky_doubles(3000)
    script = (
        "for (const x of JSON.parse(require('fs').readFileSync(0))) console.log(JSON.stringify(x))"
    )
    result = subprocess.run(
        [node, "-e", script], input=json.dumps(numbers), capture_output=True, text=True, check=True
    )
    for x, js_text in zip(numbers, result.stdout.splitlines(), strict=True):
        ours = json.dumps(js_number(x))
        if x.is_integer() or abs(x) >= 1e-4:
            assert ours == js_text, x
        else:
            # Only the exponent's spelling may differ (1e-07 vs 1e-7, 1e-05 vs 0.00001).
            assert float(ours) == float(js_text), x
