"""Our builders + codec reproduce, byte for byte, what Happy's own builders emit.

The cases in ``tests/fixtures/happy-wire/builders.json`` (the seed's 13
updates and 4 ephemerals) and ``builders-2026.json`` (``delete-machine`` and
``session-event``, added by Happy in 2026) were recorded from Happy Server's
TypeScript builders with the clock pinned to ``fixedNow``. Both files are
copies of the shared fixtures; a test keeps each identical to its original.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eventrouter.client import _builders as b
from eventrouter.client._happy_json import from_happy_json, to_happy_json
from eventrouter.client._records import ABSENT
from eventrouter.v1 import events_pb2 as pb

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "happy-wire"
SHARED_FIXTURE_DIR = REPO_ROOT.parent / "shared" / "fixtures" / "happy-wire"
FIXTURE_FILES = ("builders.json", "builders-2026.json")


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURE_DIR / name).read_text(encoding="utf-8"))
    return data


FIXTURES = {name: _load(name) for name in FIXTURE_FILES}
# Both files were recorded with the same pinned clock; the builders get it as now_ms.
(FIXED_NOW,) = {data["fixedNow"] for data in FIXTURES.values()}
CASES: list[dict[str, Any]] = [case for data in FIXTURES.values() for case in data["cases"]]

# Happy's name -> our twin. Spelled out rather than derived, so a renamed
# builder fails here instead of being silently skipped.
BUILDERS: dict[str, Callable[..., Any]] = {
    "buildNewSessionUpdate": b.build_new_session_update,
    "buildNewMessageUpdate": b.build_new_message_update,
    "buildUpdateSessionUpdate": b.build_update_session_update,
    "buildDeleteSessionUpdate": b.build_delete_session_update,
    "buildUpdateAccountUpdate": b.build_update_account_update,
    "buildNewMachineUpdate": b.build_new_machine_update,
    "buildUpdateMachineUpdate": b.build_update_machine_update,
    "buildSessionActivityEphemeral": b.build_session_activity_ephemeral,
    "buildMachineActivityEphemeral": b.build_machine_activity_ephemeral,
    "buildUsageEphemeral": b.build_usage_ephemeral,
    "buildMachineStatusEphemeral": b.build_machine_status_ephemeral,
    "buildNewArtifactUpdate": b.build_new_artifact_update,
    "buildUpdateArtifactUpdate": b.build_update_artifact_update,
    "buildDeleteArtifactUpdate": b.build_delete_artifact_update,
    "buildRelationshipUpdatedEvent": b.build_relationship_updated_event,
    "buildNewFeedPostUpdate": b.build_new_feed_post_update,
    "buildKVBatchUpdateUpdate": b.build_kv_batch_update_update,
    # Added by Happy in 2026 (builders-2026.json).
    "buildDeleteMachineUpdate": b.build_delete_machine_update,
    "buildSessionEventEphemeral": b.build_session_event_ephemeral,
}


def stand_in_public_url(path: str) -> str:
    """The public URL function the fixtures were recorded with (see their README)."""
    return "https://files.example.invalid/" + path


def decode_arg(value: Any) -> Any:
    """Undo the fixture's tags: ``$date`` -> aware datetime, ``$bytes`` -> bytes, ``$undefined``."""
    if isinstance(value, dict):
        if value.keys() == {"$date"}:
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value["$date"])
        if value.keys() == {"$bytes"}:
            return base64.b64decode(value["$bytes"], validate=True)
        if value.keys() == {"$undefined"}:
            return ABSENT
        return {key: decode_arg(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_arg(item) for item in value]
    return value


CASE_IDS = [f"{i:02d}-{case['builder']}" for i, case in enumerate(CASES)]


def build(case: dict[str, Any]) -> Any:
    builder = BUILDERS[case["builder"]]
    kwargs: dict[str, Any] = {"now_ms": FIXED_NOW}
    if builder is b.build_update_account_update:
        kwargs["public_url"] = stand_in_public_url
    return builder(*decode_arg(case["args"]), **kwargs)


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixture_copy_matches_shared_fixture(name: str) -> None:
    shared = SHARED_FIXTURE_DIR / name
    if not shared.exists():
        message = f"shared fixture {shared} is missing; cannot compare the copy"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert (FIXTURE_DIR / name).read_bytes() == shared.read_bytes()


def test_fixtures_cover_every_builder() -> None:
    assert {case["builder"] for case in CASES} == set(BUILDERS)
    assert len(CASES) == 36  # 32 seed cases + 4 of 2026: none was dropped or skipped


def _kind(output: dict[str, Any]) -> str:
    # session-event has a string `body`: only an object body holds an update's `t`.
    body = output.get("body")
    kind: str = body["t"] if isinstance(body, dict) else output["type"]
    return kind


def test_fixtures_cover_every_modelled_kind() -> None:
    # Every oneof case but `raw` (the carrier of kinds the contract does not model)
    # is a kind; Happy's name for it is the field name with dashes.
    modelled = sorted(
        field.name.replace("_", "-")
        for union in (pb.UpdateEvent, pb.EphemeralPayload)
        for field in union.DESCRIPTOR.oneofs_by_name["event"].fields
        if field.name != "raw"
    )
    assert len(modelled) == 19  # 14 updates + 5 ephemerals
    assert sorted({_kind(case["output"]) for case in CASES}) == modelled


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_builder_output_is_happys_json_byte_for_byte(case: dict[str, Any]) -> None:
    payload = build(case)
    assert json.dumps(to_happy_json(payload)) == json.dumps(case["output"])
    assert from_happy_json(case["output"]) == payload


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_happy_json_survives_protobuf_bytes(case: dict[str, Any]) -> None:
    # What a subscriber sees after the gRPC hop: parse the serialized payload, re-encode.
    payload = build(case)
    clone = type(payload).FromString(payload.SerializeToString())
    assert json.dumps(to_happy_json(clone)) == json.dumps(case["output"])
