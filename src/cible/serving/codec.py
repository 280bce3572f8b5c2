"""JSON in and out of the scoring server: orjson when it is installed, the standard library otherwise.

Azure's server dumps `run()`'s result with `json.dumps`; orjson gives the same JSON for the
values scripts return (lists, dicts, numbers, strings, and numpy arrays with OPT_SERIALIZE_NUMPY)
several times faster, which matters for 1000-row answers. Where orjson refuses a value (an int
beyond 64 bits, say) the standard library is tried before giving up, so nothing Azure would
serialise fails here. One difference is kept on purpose: NaN and infinities come out as `null`
(valid JSON) where `json.dumps` writes `NaN`.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

try:  # optional: the replica's environment may lack it
    import orjson
except ImportError:  # pragma: no cover - exercised only in environments without orjson
    orjson = None


def _default(obj: Any) -> Any:
    """Values JSON has no type for, converted the way a scoring script would expect (no numpy import:
    numpy and pandas objects are recognised by what they offer)."""
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # a pandas DataFrame: its rows
        return obj.to_dict(orient="records")
    if hasattr(obj, "tolist"):  # numpy arrays (any layout) and scalars, pandas Series
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Decimal):
        return float(obj)
    if isinstance(obj, (bytes, bytearray)):
        return obj.decode("utf-8")
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _std_dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=_default).encode("utf-8")


if orjson is not None:
    _OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    _orjson_dumps = orjson.dumps
    loads = orjson.loads
    JSONDecodeError = orjson.JSONDecodeError

    def dumps(obj: Any) -> bytes:
        """`obj` as JSON bytes."""
        try:
            return _orjson_dumps(obj, default=_default, option=_OPTIONS)
        except TypeError:  # orjson's limits (big ints, ...): the standard library may still manage
            return _std_dumps(obj)
else:  # pragma: no cover
    loads = json.loads
    JSONDecodeError = json.JSONDecodeError
    dumps = _std_dumps
