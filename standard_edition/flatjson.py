"""JSON for flat values written once per message (archive hashes, message history).

JSONEncoder.encode builds its C encoder anew on every call; for the small records written on
every message that set-up is half the cost. `encoder()` builds it once. With no circular-
reference markers, it is only for values without cycles: flat tuples, lists and dicts of
strings, numbers and None, which is all its callers give it. The text is exactly what
json.dumps writes with the same options.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def encoder(*, ensure_ascii: bool = True, compact: bool = False) -> Callable[[Any], str]:
    """json.dumps(value, ensure_ascii=..., separators=(",", ":") if compact) as a function."""
    py = json.JSONEncoder(
        ensure_ascii=ensure_ascii, separators=(",", ":") if compact else (", ", ": ")
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return py.encode
    c_encode = make(
        None,
        py.default,
        json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
        if ensure_ascii
        else json.encoder.encode_basestring,  # type: ignore[attr-defined]
        None,
        py.key_separator,
        py.item_separator,
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )

    def encode(value: Any) -> str:
        return "".join(c_encode(value, 0))

    return encode
