"""Azure ML CLI v2 YAML: loading, references, expressions and ``--set`` overrides.

Names are imported lazily: the launcher imports ``expressions`` (stdlib only)
and must not pull in pydantic/PyYAML through this package's ``__init__``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LoadedSpec": "loader",
    "load_spec": "loader",
    "load_spec_dict": "loader",
    "load_spec_text": "loader",
    "apply_set_overrides": "overrides",
    "AssetRef": "refs",
    "classify_path": "refs",
    "parse_asset_ref": "refs",
    "parse_compute_ref": "refs",
    "parse_datastore_uri": "refs",
    "parse_job_output_uri": "refs",
    "wasbs_to_https": "refs",
    "check_command": "expressions",
    "format_literal": "expressions",
    "referenced": "expressions",
    "render_command": "expressions",
    "resolve_output_path": "expressions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
