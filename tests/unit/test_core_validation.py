"""Id rules: the fast check (isprintable plus the ASCII space) refuses exactly what the
full definition (no control, format or separator characters, no space) refuses."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventrouter.server.core.validation import DEFAULT_ID_RULES, IdTooLong, InvalidArgument


def refused_by_definition(value: str) -> bool:
    return any(unicodedata.category(ch)[0] in ("C", "Z") for ch in value)


def refused(value: str) -> bool:
    try:
        DEFAULT_ID_RULES.check(value, "user_id")
    except IdTooLong:
        raise
    except InvalidArgument:
        return True
    return False


def test_every_code_point_is_judged_as_the_definition_says() -> None:
    # One pass over all of Unicode: each character alone, inside an id.
    wrong = [
        hex(cp)
        for cp in range(sys.maxunicode + 1)
        if not 0xD800 <= cp <= 0xDFFF and refused(f"a{chr(cp)}b") != refused_by_definition(chr(cp))
    ]
    assert wrong == []


@given(st.text(min_size=1, max_size=64))
def test_random_ids_are_judged_as_the_definition_says(value: str) -> None:
    assert refused(value) == refused_by_definition(value)


@pytest.mark.parametrize("value", ["a b", "a\u00a0b", "a\u3000b", "a\u2028b", "a\tb", "a\u200bb"])
def test_whitespace_and_invisible_characters_are_refused(value: str) -> None:
    with pytest.raises(InvalidArgument, match="whitespace or control"):
        DEFAULT_ID_RULES.check(value, "user_id")
