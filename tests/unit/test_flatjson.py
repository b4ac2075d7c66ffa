"""flatjson writes exactly what json.dumps writes with the same options."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from standard_edition import flatjson

SCALARS = st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False)
FLAT = (
    st.lists(SCALARS, max_size=8)
    | st.tuples(SCALARS, SCALARS, SCALARS)
    | st.dictionaries(st.text(max_size=10), SCALARS | st.lists(st.text(), max_size=3), max_size=6)
)


@given(FLAT)
def test_default_options_match_json_dumps(value: Any) -> None:
    assert flatjson.encoder()(value) == json.dumps(value)


@given(FLAT)
def test_compact_unicode_matches_json_dumps(value: Any) -> None:
    encode = flatjson.encoder(ensure_ascii=False, compact=True)
    assert encode(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
