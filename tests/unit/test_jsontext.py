"""The rules for JSON text carried in the contract, shared by the codec and the server."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest

from eventrouter import jsontext
from eventrouter.jsontext import MAX_DEPTH, JsonTextError


def arrays(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_depth_limit_is_exact() -> None:
    assert jsontext.loads(arrays(MAX_DEPTH), "f") is not None
    assert jsontext.loads('{"a":' * (MAX_DEPTH - 1) + "{}" + "}" * (MAX_DEPTH - 1), "f")
    with pytest.raises(JsonTextError, match="deeper than 32") as caught:
        jsontext.loads(arrays(MAX_DEPTH + 1), "f")
    assert caught.value.field == "f"


def test_far_too_deep_text_is_refused_without_recursing() -> None:
    # Deeper than Python's recursion limit: the parser gives up, the rule still speaks.
    with pytest.raises(JsonTextError, match="deeper than 32"):
        jsontext.loads(arrays(100_000), "f")


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a":-Infinity}'])
def test_non_json_numbers_are_refused(text: str) -> None:
    with pytest.raises(JsonTextError, match="not a JSON value"):
        jsontext.loads(text, "f")


@pytest.mark.parametrize("text", ['{"a":1,"a":1}', '[{"b":{"a":1,"a":2}}]'])
def test_repeated_keys_are_refused(text: str) -> None:
    with pytest.raises(JsonTextError, match="'a' is repeated"):
        jsontext.loads(text, "f")


@pytest.mark.parametrize("text", ["", "{", "tru", "1 2", "'a'"])
def test_malformed_text_is_refused(text: str) -> None:
    with pytest.raises(JsonTextError, match="not valid JSON text"):
        jsontext.loads(text, "f")


def test_objects_keep_their_key_order() -> None:
    assert list(jsontext.loads('{"z":1,"a":2,"m":3}', "f")) == ["z", "a", "m"]


def test_dumps_is_compact_and_keeps_unicode() -> None:
    assert jsontext.dumps({"b": [1, 2.5, None], "a": "é✓"}, "f") == '{"b":[1,2.5,null],"a":"é✓"}'


def test_dumps_escapes_a_lone_surrogate_that_utf8_cannot_hold() -> None:
    text = jsontext.dumps(["\ud800", "é"], "f")
    text.encode("utf-8")
    assert json.loads(text) == ["\ud800", "é"]


def test_dumps_accepts_any_mapping() -> None:
    assert jsontext.dumps(types.MappingProxyType({"a": {"b": 1}}), "f") == '{"a":{"b":1}}'


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({1, 2}, "not a JSON value"),
        (float("nan"), "not a JSON value"),
        ({1: "x", "1": "y"}, "repeated"),
        (json.loads(arrays(MAX_DEPTH + 1)), "deeper"),
    ],
)
def test_dumps_refuses_what_loads_would(value: Any, reason: str) -> None:
    with pytest.raises(JsonTextError, match=reason):
        jsontext.dumps(value, "f")


@pytest.mark.parametrize("kind", ["a", "new-feed-post", "x_y.z:1", "A" * 64])
def test_kind_rule_accepts(kind: str) -> None:
    jsontext.check_kind(kind, "k")


@pytest.mark.parametrize("kind", ["", "a b", "a/b", '"a"', "é", "A" * 65])
def test_kind_rule_refuses(kind: str) -> None:
    with pytest.raises(JsonTextError, match="1 to 64 characters"):
        jsontext.check_kind(kind, "k")


def test_raw_event_needs_its_kind_as_discriminator() -> None:
    assert jsontext.raw_event("x", '{"t":"x","a":1}', "t", kind_field="k", json_field="j") == {
        "t": "x",
        "a": 1,
    }
    for text in ('{"type":"x"}', '{"t":"y"}', '"x"'):
        with pytest.raises(JsonTextError) as caught:
            jsontext.raw_event("x", text, "t", kind_field="k", json_field="j")
        assert caught.value.field == "j"


def test_members_are_unique_and_parsed() -> None:
    assert jsontext.members([("a", "1"), ("b", '{"c":null}')], "m") == {"a": 1, "b": {"c": None}}
    with pytest.raises(JsonTextError) as caught:
        jsontext.members([("a", "1"), ("b", "2"), ("a", "3")], "m")
    assert (caught.value.field, caught.value.reason) == ("m[2].key", "the key 'a' is repeated")
