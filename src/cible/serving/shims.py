"""`@rawhttp`, `AMLRequest` and `AMLResponse` for scoring scripts, without Flask.

Scripts import them as `azureml_inference_server_http.api.aml_request` / `.aml_response`, or by
the older `azureml.contrib.services.aml_request` / `.aml_response` names. `install_import_names()`
puts these modules in `sys.modules` before the script is imported, **always**, even where the real
`azureml-inference-server-http` package is installed: its `rawhttp` raises a flag in its own
module and its classes are Flask's, so a script using them would be served differently
depending on what its environment happens to hold. With ours in place the server recognises
`@rawhttp` and `AMLResponse` the same way everywhere. A real top-level package (`azureml` from
azureml-core, say) is never replaced: only the four leaf modules are registered, plus empty parent
packages where no real one exists.

`AMLRequest` offers the parts of Flask's request that scoring scripts use (method, headers, args,
data, get_data, json, get_json, form, files, path, full_path, url, content_type, ...).
`AMLResponse(body, status_code, headers=None, json_str=False)` is what Azure's is. A script that
returns a real Flask `Response` is served too (anything with `status_code`, `headers` and
`get_data()`).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

from cible.serving import codec
from cible.serving.request import AMLRequest, Headers, UnsupportedMediaType, title_case_headers

__all__ = ["AMLRequest", "AMLResponse", "Headers", "UnsupportedMediaType", "install_import_names", "rawhttp",
           "title_case_headers"]

_raw_http_requested = False  # Azure's semantics: any function decorated with @rawhttp switches the mode


def rawhttp(func):  # noqa: ANN001, ANN201
    """Decorator for `run(request)`: the server passes the whole request (an `AMLRequest`)."""
    global _raw_http_requested
    _raw_http_requested = True
    return func


def reset_rawhttp() -> None:
    """Forget `@rawhttp` before (re)loading a script."""
    global _raw_http_requested
    _raw_http_requested = False


def rawhttp_requested() -> bool:
    return _raw_http_requested


class AMLResponse:
    """What a `@rawhttp` run() may return, sent as it is: `AMLResponse(body, status_code, headers={...},
    json_str=False)`. As Azure's: `json_str` dumps `body` as JSON; `None` is an empty JSON object; header
    values with commas become repeated headers; `x-ms-run-function-failed` says whether run failed."""

    def __init__(self, message: Any, status_code: int, response_headers: dict[str, str] | None = None,
                 json_str: bool = False, run_function_failed: bool = False) -> None:
        response_headers = response_headers or {}
        self.status_code = int(status_code)
        self.headers = Headers()
        if message is None:
            body, content_type = b"{}", "application/json"
        elif json_str:
            body, content_type = codec.dumps(message), "application/json"
        else:
            body, content_type = _as_bytes(message), "text/html; charset=utf-8"
        self._body = body
        if not any(key.lower() == "content-type" for key in response_headers):
            self.headers["Content-Type"] = content_type
        self.headers["x-ms-run-function-failed"] = run_function_failed
        for header, value in response_headers.items():
            for part in str(value).split(","):
                self.headers.add(header, part.strip())

    @property
    def status(self) -> str:
        return str(self.status_code)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def mimetype(self) -> str:
        return (self.content_type or "").split(";")[0].strip().lower()

    def get_data(self, as_text: bool = False) -> bytes | str:
        return self._body.decode("utf-8", "replace") if as_text else self._body

    def set_data(self, value: str | bytes) -> None:
        self._body = _as_bytes(value)

    data = property(get_data, set_data)

    def __repr__(self) -> str:
        return f"<AMLResponse {len(self._body)} bytes [{self.status_code}]>"


def _as_bytes(message: Any) -> bytes:
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    if isinstance(message, (list, tuple)):  # Flask takes an iterable of chunks
        return b"".join(_as_bytes(chunk) for chunk in message)
    return str(message).encode("utf-8")


_LEAVES = {
    "azureml_inference_server_http.api.aml_request": {"rawhttp": rawhttp, "AMLRequest": AMLRequest},
    "azureml_inference_server_http.api.aml_response": {"AMLResponse": AMLResponse},
    "azureml.contrib.services.aml_request": {"rawhttp": rawhttp, "AMLRequest": AMLRequest},
    "azureml.contrib.services.aml_response": {"AMLResponse": AMLResponse},
}


def install_import_names() -> None:
    """Register the four modules scripts import (see the module docstring). Parent packages are made,
    empty, only where the top-level package does not exist; a real one is left alone (the scripts'
    `from ... import` form goes straight to the registered module)."""
    for name, exports in _LEAVES.items():
        module = types.ModuleType(name, f"cible's shim for {name} (cible.serving.shims)")
        module.__dict__.update(exports)
        sys.modules[name] = module
        top = name.split(".")[0]
        if _is_real(top):
            continue
        parts = name.split(".")
        for depth in range(len(parts) - 1, 0, -1):
            parent_name, child = ".".join(parts[:depth]), parts[depth]
            parent = sys.modules.get(parent_name)
            if parent is None:
                parent = types.ModuleType(parent_name)
                parent.__path__ = []  # a package, holding only what is registered here
                parent.__cible_shim__ = True
                sys.modules[parent_name] = parent
            if not hasattr(parent, child):
                setattr(parent, child, sys.modules[f"{parent_name}.{child}"])


def _is_real(top: str) -> bool:
    """Whether the top-level package `top` is an installed one (not a parent made here)."""
    module = sys.modules.get(top)
    if module is not None:
        return not getattr(module, "__cible_shim__", False)
    return importlib.util.find_spec(top) is not None
