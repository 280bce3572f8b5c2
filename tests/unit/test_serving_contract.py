"""The scoring server's contract (azureml-spec §7), with the ASGI app driven in-process: routes, codes,
messages and headers; the three run() modes and request_headers; startup errors; the SIGALRM timeout;
swagger; the AMLRequest/AMLResponse shims; the MLflow input forms; the pieces main.py is built of
(model folder, state file, listening socket) and the reload watcher's settling rule."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from cible.serving import codec, shims
from cible.serving.app import RUN_FAILED, ScoringApp, ServingState
from cible.serving.main import listen_socket, model_folder, write_state
from cible.serving.mlflow_model import MlflowModel, find_mlflow_model
from cible.serving.reload import ScriptWatcher
from cible.serving.script import BadInput, load_entry_script, start


class Answer:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status, self.body = status, body
        self.headers = {k.decode(): v.decode() for k, v in headers}
        self.header_list = [(k.decode(), v.decode()) for k, v in headers]

    def json(self):  # noqa: ANN201
        return json.loads(self.body)


def call(app: ScoringApp, method: str, path: str, body: bytes | str = b"", headers: dict[str, str] | None = None,
         query: str = "") -> Answer:
    """One request through the ASGI callable, in this (main) thread, as uvicorn would make it."""
    body = body.encode() if isinstance(body, str) else body
    scope = {"type": "http", "http_version": "1.1", "method": method, "scheme": "http", "path": path,
             "root_path": "", "query_string": query.encode(), "server": ("127.0.0.1", 5001),
             "client": ("127.0.0.1", 40000),
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    chunks = [body[: len(body) // 2], body[len(body) // 2:]]  # a body in two messages, as big ones come
    sent: list[dict] = []

    async def receive() -> dict:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    answer = Answer(sent[0]["status"], sent[0]["headers"], sent[1]["body"])
    assert int(answer.headers["content-length"]) == len(answer.body)
    return answer


def serve(tmp_path: Path, source: str, timeout_ms: int = 3_600_000, name: str = "score.py") -> ScoringApp:
    """The app serving `source` as the entry script, loaded and initialised as main.py does."""
    (tmp_path / name).write_text(textwrap.dedent(source))
    shims.install_import_names()
    state = ServingState(str(tmp_path))
    state.set(*start(lambda: load_entry_script(str(tmp_path), name)))
    return ScoringApp(state, timeout_ms)


RAW = """
import json
def init():
    global factor
    factor = 3
def run(raw_data):
    data = json.loads(raw_data)
    if data.get("fail"):
        raise ValueError("the script failed")
    if "echo" in data:
        return data["echo"]
    return [x * factor for x in data["data"]]
"""


# -- raw mode, headers, routes


def test_raw_mode_passes_the_body_as_text_and_answers_json(tmp_path: Path) -> None:
    app = serve(tmp_path, RAW)
    answer = call(app, "POST", "/score", '{"data": [1, 2]}', {"content-type": "text/plain"})
    assert (answer.status, answer.json()) == (200, [3, 6])
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-ms-run-function-failed"] == "False"
    assert float(answer.headers["x-ms-run-fn-exec-ms"]) >= 0
    assert answer.headers["x-ms-server-version"].startswith("cible/")
    uuid.UUID(answer.headers["x-request-id"])  # a new one when none is sent
    assert answer.headers["x-ms-request-id"] == answer.headers["x-request-id"]
    assert "x-ms-client-request-id" not in answer.headers


def test_a_returned_string_is_a_json_string_as_on_azure(tmp_path: Path) -> None:
    app = serve(tmp_path, RAW)
    answer = call(app, "POST", "/score", '{"echo": "[1, 2]"}')
    assert answer.body == b'"[1, 2]"'


def test_get_score_passes_the_query_as_a_json_string(tmp_path: Path) -> None:
    app = serve(tmp_path, """
        def init(): pass
        def run(raw): return raw
    """)
    answer = call(app, "GET", "/score", query="a=1&b=[1,2]&c=x&d=null&foo=1&foo=2")
    assert json.loads(answer.json()) == {"a": 1, "b": [1, 2], "c": "x", "d": None, "foo": [1, 2]}


def test_request_ids_follow_azures_rules(tmp_path: Path) -> None:
    app = serve(tmp_path, RAW)
    echoed = call(app, "POST", "/score", '{"data": []}', {"x-request-id": "r1", "TraceId": "t1"})
    assert (echoed.headers["x-request-id"], echoed.headers["x-ms-request-id"], echoed.headers["traceid"]) == \
        ("r1", "r1", "t1")
    client = call(app, "GET", "/", headers={"x-ms-client-request-id": "c1"})
    assert (client.headers["x-ms-request-id"], client.headers["x-ms-client-request-id"]) == ("c1", "c1")
    legacy = call(app, "GET", "/", headers={"x-ms-request-id": "l1"})
    assert (legacy.headers["x-ms-request-id"], legacy.headers["x-ms-client-request-id"]) == ("l1", "l1")
    too_long = call(app, "POST", "/score", "{}", {"x-request-id": "x" * 101})
    assert (too_long.status, too_long.json()) == (431, {"message": "x-request-id must not exceed 100 characters"})


def test_numpy_results_are_serialised(tmp_path: Path) -> None:
    app = serve(tmp_path, """
        import numpy as np
        def init(): pass
        def run(raw):
            a = np.arange(6, dtype=np.int64).reshape(2, 3)
            return {"array": a, "column": a[:, 1], "scalar": np.float32(0.5), "t": (1, 2)}
    """)
    assert call(app, "POST", "/score", "{}").json() == {"array": [[0, 1, 2], [3, 4, 5]], "column": [1, 4],
                                                       "scalar": 0.5, "t": [1, 2]}


def test_a_result_json_cannot_hold_is_azures_internal_error(tmp_path: Path) -> None:
    app = serve(tmp_path, """
        def init(): pass
        def run(raw): return object()
    """)
    answer = call(app, "POST", "/score", "{}")
    assert (answer.status, answer.json()["message"]) == (500, "An unexpected internal error occurred. Check the logs "
                                                              "for more info.")


def test_request_headers_parameter_gets_the_headers_as_flask_names_them(tmp_path: Path) -> None:
    app = serve(tmp_path, """
        def init(): pass
        def run(raw_data, request_headers):
            return {"body": raw_data, "headers": request_headers}
    """)
    answer = call(app, "POST", "/score", "hi", {"X-Custom-Thing": "v", "x-ms-request-id": "m"})
    assert answer.json()["body"] == "hi"
    assert answer.json()["headers"]["X-Custom-Thing"] == "v"
    assert answer.json()["headers"]["X-Ms-Request-Id"] == "m"


def test_routes_and_methods(tmp_path: Path) -> None:
    app = serve(tmp_path, RAW)
    health = call(app, "GET", "/")
    assert (health.status, health.body, health.headers["content-type"]) == (200, b"Healthy", "text/html; charset=utf-8")
    assert call(app, "HEAD", "/").status == 200
    missing = call(app, "GET", "/nowhere")
    assert missing.status == 404 and missing.json()["message"].startswith("The requested URL was not found")
    put = call(app, "PUT", "/score", "{}")
    assert (put.status, put.json()) == (405, {"message": "The method is not allowed for the requested URL."})
    assert call(app, "POST", "/").status == 405
    options = call(app, "OPTIONS", "/score")
    assert (options.status, options.body) == (200, b"")


def test_a_body_that_is_not_utf8_is_a_400(tmp_path: Path) -> None:
    app = serve(tmp_path, RAW)
    answer = call(app, "POST", "/score", b"\xff\xfe")
    assert answer.status == 400 and answer.json()["message"].startswith("Input cannot be decoded as UTF-8")


# -- failures


def test_run_raising_is_azures_500_with_the_traceback_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = serve(tmp_path, RAW)
    with caplog.at_level(logging.ERROR, logger="cible.serving"):
        answer = call(app, "POST", "/score", '{"fail": true}', {"x-request-id": "req-9"})
    assert (answer.status, answer.json()) == (500, {"message": RUN_FAILED})
    assert answer.headers["x-ms-run-function-failed"] == "True"
    record = next(r for r in caplog.records if "run() raised" in r.getMessage())
    assert "req-9" in record.getMessage() and "the script failed" in str(record.exc_info[1])
    assert call(app, "POST", "/score", '{"data": [1]}').json() == [3]  # the server carries on


def test_malformed_json_that_made_run_raise_is_a_400_naming_the_problem(tmp_path: Path) -> None:
    app = serve(tmp_path, RAW)
    answer = call(app, "POST", "/score", '{"data": [1, 2', {"content-type": "application/json"})
    assert answer.status == 400
    assert answer.json()["message"].startswith("the request body is not valid JSON: ")
    # Not JSON by its content type: the script's failure is Azure's 500, as before.
    assert call(app, "POST", "/score", '{"data": [1, 2', {"content-type": "text/plain"}).status == 500


def test_run_past_the_timeout_is_interrupted(tmp_path: Path) -> None:
    app = serve(tmp_path, """
        import time
        def init(): pass
        def run(raw):
            if raw == "spin":
                while True:
                    pass
            if raw == "sleep":
                time.sleep(30)
            return "done"
    """, timeout_ms=200)
    for body in ("spin", "sleep"):
        started = time.monotonic()
        answer = call(app, "POST", "/score", body)
        assert (answer.status, answer.json()) == (500, {"message": "Scoring timeout after 200 ms"})
        assert answer.headers["x-ms-run-function-failed"] == "True"
        assert time.monotonic() - started < 5
    assert call(app, "POST", "/score", "fast").json() == "done"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # disarmed: nothing fires into later code


@pytest.mark.parametrize("source, message", [
    ("def run(x): return x", "does not have a init() function defined"),
    ("def init(): pass", "does not have a run() function defined"),
    ("def init(): pass\ndef run(*args): return 1",
     "run() cannot accept positional-only arguments, *args, or **kwargs."),
    ("def init(): pass\ndef run(request_headers): return 1",
     'run() needs to accept an argument other than "request_headers"'),
    ("import not_a_module_anywhere\n", "Failed to import the scoring script"),
    ("def init():\n    raise ValueError('no model here')\ndef run(x): return x",
     "init() failed: ValueError: no model here"),
])
def test_a_script_that_cannot_be_served_leaves_the_server_unready_saying_why(tmp_path: Path, source: str,
                                                                           message: str) -> None:
    app = serve(tmp_path, source)
    assert not app.state.ready and message in app.state.error
    for method, path in (("GET", "/"), ("POST", "/score"), ("GET", "/swagger.json")):
        answer = call(app, method, path, "{}")
        assert answer.status == 503 and message in answer.json()["message"]


def test_a_missing_entry_script_is_a_startup_error(tmp_path: Path) -> None:
    scorer, error = start(lambda: load_entry_script(str(tmp_path), "absent.py"))
    assert scorer is None and "absent.py does not exist" in error


def test_without_an_entry_script_the_module_main_is_served(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("def init(): pass\ndef run(raw): return 'from main'\n")
    try:
        scorer, error = start(lambda: load_entry_script(str(tmp_path), None))
        assert error is None and scorer.run("x") == "from main"
    finally:
        sys.modules.pop("main", None)
        sys.path.remove(str(tmp_path))


# -- inference-schema mode and swagger

SCHEMA = """
import numpy as np
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType

def init(): pass

@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])))
@input_schema("scale", StandardPythonParameterType(1.0))
@output_schema(StandardPythonParameterType([3.0]))
def run(data, scale=1.0):
    assert isinstance(data, np.ndarray)
    return (data.sum(axis=1) * scale).tolist()
"""


def test_schema_mode_calls_run_with_the_json_objects_parameters(tmp_path: Path) -> None:
    app = serve(tmp_path, SCHEMA)
    assert app.state.scorer.mode == "schema"
    body = json.dumps({"data": [[1.0, 2.0], [3.0, 4.0]], "scale": 2.0, "ignored": 1})
    answer = call(app, "POST", "/score", body, {"content-type": "application/json"})
    assert (answer.status, answer.json()) == (200, [6.0, 14.0])
    defaulted = call(app, "POST", "/score", '{"data": [[1.0, 1.0]]}',
                     {"content-type": "application/json; charset=utf-8"})
    assert defaulted.json() == [2.0]


@pytest.mark.parametrize("body, content_type, status, message", [
    ('{"data": [[1.0]]}', "text/plain", 415, "Expects Content-Type to be application/json"),
    ("[1, 2]", "application/json", 400, "POST body should be a JSON dictionary."),
    ("", "application/json", 400, "POST body is empty. Expecting a JSON dictionary."),
    ("{nope", "application/json", 400, "POST body could not be decoded as JSON"),
    ('{"scale": 2}', "application/json", 400, "A value is not provided for the 'data' parameter."),
])
def test_schema_mode_refuses_bodies_as_azure_does(tmp_path: Path, body: str, content_type: str, status: int,
                                                  message: str) -> None:
    app = serve(tmp_path, SCHEMA)
    answer = call(app, "POST", "/score", body, {"content-type": content_type})
    assert answer.status == status and answer.json()["message"].startswith(message)


def test_swagger_comes_from_the_decorators(tmp_path: Path) -> None:
    app = serve(tmp_path, SCHEMA)
    v2 = call(app, "GET", "/swagger.json").json()
    assert v2["swagger"] == "2.0" and set(v2["paths"]) == {"/", "/score", "/swagger.json"}
    service_input = v2["definitions"]["ServiceInput"]
    assert set(service_input["properties"]) == {"data", "scale"}
    assert service_input["example"] == {"data": [[1.0, 2.0]], "scale": 1.0}
    assert v2["definitions"]["ServiceOutput"]["example"] == [3.0]
    v3 = call(app, "GET", "/swagger.json", query="version=3").json()
    assert v3["openapi"] == "3.0.3" and "ServiceInput" in v3["components"]["schemas"]
    assert call(app, "GET", "/swagger.json", query="version=3.1").json()["openapi"] == "3.1.0"
    unknown = call(app, "GET", "/swagger.json", query="version=4")
    assert unknown.status == 404 and unknown.json()["message"].startswith("Swagger version [4] is not valid.")


def test_an_undecorated_script_gets_empty_schemas_and_a_user_swagger_file_wins(tmp_path: Path) -> None:
    app = serve(tmp_path, RAW)
    assert call(app, "GET", "/swagger.json").json()["definitions"]["ServiceInput"] == {"type": "object", "example": {}}
    (tmp_path / "swagger3.json").write_text('{"openapi": "3.0.0", "mine": true}')
    app = serve(tmp_path, RAW)
    assert call(app, "GET", "/swagger.json", query="version=3").json() == {"openapi": "3.0.0", "mine": True}


# -- rawhttp mode and the shims

RAWHTTP = """
from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse

def init(): pass

@rawhttp
def run(request):
    if request.method == "OPTIONS":
        return AMLResponse("", 204)
    if request.args.get("fail"):
        return AMLResponse("broken", 503)
    if request.path.endswith("score") and request.method == "GET":
        return {"args": request.args.to_dict(), "full_path": request.full_path, "url": request.url}
    return AMLResponse({"text": request.get_data(as_text=True), "json": request.get_json(),
                        "type": request.content_type, "header": request.headers.get("x-thing"),
                        "is_json": request.is_json},
                       201, {"X-Extra": "a, b"}, json_str=True)
"""


def test_rawhttp_gets_the_request_and_its_response_is_sent_as_is(tmp_path: Path) -> None:
    app = serve(tmp_path, RAWHTTP)
    assert app.state.scorer.mode == "rawhttp"
    answer = call(app, "POST", "/score", '{"k": 1}', {"Content-Type": "application/json", "X-Thing": "yes"})
    assert answer.status == 201
    assert answer.json() == {"text": '{"k": 1}', "json": {"k": 1}, "type": "application/json", "header": "yes",
                             "is_json": True}
    assert [v for k, v in answer.header_list if k == "x-extra"] == ["a", "b"]  # commas: repeated headers
    assert answer.headers["x-ms-run-function-failed"] == "False" and "x-ms-run-fn-exec-ms" in answer.headers
    got = call(app, "GET", "/score", query="a=1&b=two").json()
    assert got == {"args": {"a": "1", "b": "two"}, "full_path": "/score?a=1&b=two",
                   "url": "http://127.0.0.1:5001/score?a=1&b=two"}
    failed = call(app, "POST", "/score", "", query="fail=1")
    assert (failed.status, failed.body, failed.headers["x-ms-run-function-failed"]) == (503, b"broken", "True")
    assert call(app, "OPTIONS", "/score").status == 204  # rawhttp scripts answer OPTIONS themselves


def test_the_old_contrib_import_names_work_and_cannot_mix_with_input_schema(tmp_path: Path) -> None:
    app = serve(tmp_path, """
        from azureml.contrib.services.aml_request import AMLRequest, rawhttp
        from azureml.contrib.services.aml_response import AMLResponse
        import azureml.contrib.services.aml_response as module
        def init(): pass
        @rawhttp
        def run(request):
            return AMLResponse(request.get_data(), 200, {"Content-Type": "application/octet-stream"})
    """)
    answer = call(app, "POST", "/score", b"\x00\x01")
    assert (answer.body, answer.headers["content-type"]) == (b"\x00\x01", "application/octet-stream")
    mixed = SCHEMA.replace("def run(", "@rawhttp\ndef run(").replace(
        "def init", "from azureml_inference_server_http.api.aml_request import rawhttp\ndef init")
    app = serve(tmp_path, mixed)
    assert app.state.error == "run() cannot be decorated with both @rawhttp and @input_schema"


def test_aml_request_reads_forms_files_and_cookies() -> None:
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nvalue\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n\x01\x02\r\n--{boundary}--\r\n").encode("latin-1")
    scope = {"method": "POST", "path": "/score", "query_string": b"q=1",
             "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                         (b"cookie", b"session=abc"), (b"host", b"example:81")]}
    request = shims.AMLRequest(scope, body)
    assert request.form["field"] == "value"
    assert (request.files["image"].filename, request.files["image"].read()) == ("a.bin", b"\x01\x02")
    assert request.cookies == {"session": "abc"} and request.host_url == "http://example:81/"
    assert request.values.to_dict() == {"q": "1", "field": "value"}
    with pytest.raises(shims.UnsupportedMediaType):
        request.get_json()
    assert request.get_json(silent=True) is None
    form = shims.AMLRequest({**scope, "headers": [(b"content-type", b"application/x-www-form-urlencoded")]}, b"a=1&a=2")
    assert form.form.getlist("a") == ["1", "2"]


def test_aml_response_defaults_match_azures() -> None:
    empty = shims.AMLResponse(None, 200)
    assert (empty.get_data(), empty.headers["Content-Type"]) == (b"{}", "application/json")
    text = shims.AMLResponse("hello", 202)
    assert (text.data, text.headers["content-type"], text.headers["x-ms-run-function-failed"]) == \
        (b"hello", "text/html; charset=utf-8", "False")


def test_shims_leave_a_real_top_level_package_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    real = types.ModuleType("azureml")
    real.__path__ = []
    monkeypatch.setitem(sys.modules, "azureml", real)
    for name in ("azureml.contrib", "azureml.contrib.services"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    shims.install_import_names()
    assert "azureml.contrib" not in sys.modules and not hasattr(real, "contrib")
    from azureml.contrib.services.aml_request import rawhttp  # the leaf is registered all the same

    assert rawhttp is shims.rawhttp


# -- MLflow input forms (the model itself is exercised in the integration test)


def _mlflow_scorer(columns: list[str] | None = None, tensor: bool = False) -> MlflowModel:
    scorer = MlflowModel("/nowhere")
    scorer._columns, scorer._tensor = columns, tensor
    return scorer


def test_mlflow_input_forms() -> None:
    import numpy as np
    import pandas as pd

    columns = _mlflow_scorer(["a", "b"])
    split, _ = columns.model_input({"input_data": {"columns": ["a", "b"], "index": [7], "data": [[1, 2]]}})
    assert isinstance(split, pd.DataFrame) and split.index.tolist() == [7] and split.to_dict("records") == \
        [{"a": 1, "b": 2}]
    records, _ = columns.model_input({"input_data": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]})
    assert records["b"].tolist() == [2, 4]
    by_column, params = columns.model_input({"input_data": {"a": [1, 3], "b": [2, 4]}, "params": {"k": 1}})
    assert by_column.to_dict("list") == {"a": [1, 3], "b": [2, 4]} and params == {"k": 1}
    rows, _ = columns.model_input({"input_data": [[1, 2]]})
    assert list(rows.columns) == ["a", "b"]
    assert columns.model_input({"dataframe_records": [{"a": 1, "b": 2}]})[0].shape == (1, 2)
    assert columns.model_input({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}})[0].shape == (1, 2)
    tensor = _mlflow_scorer(tensor=True)
    array, _ = tensor.model_input({"inputs": [[1.0, 2.0]]})
    assert isinstance(array, np.ndarray) and array.shape == (1, 2)
    named, _ = tensor.model_input({"input_data": {"x": [[1.0]]}})
    assert isinstance(named["x"], np.ndarray)
    for bad in ([1, 2], {"nothing": 1}, {"input_data": 5}, {"input_data": [], "params": 3}):
        with pytest.raises(BadInput):
            columns.model_input(bad)


def test_mlflow_body_that_is_not_json_is_a_400_naming_the_problem(tmp_path: Path) -> None:
    state = ServingState(str(tmp_path))
    state.set(_mlflow_scorer(["a"]), None)
    answer = call(ScoringApp(state), "POST", "/score", "{not json")
    assert answer.status == 400 and answer.json()["message"].startswith("The request body is not valid JSON")


def test_find_mlflow_model_looks_below_the_model_dir(tmp_path: Path) -> None:
    (tmp_path / "name" / "1" / "model").mkdir(parents=True)
    (tmp_path / "name" / "1" / "model" / "MLmodel").write_text("flavors: {}\n")
    assert find_mlflow_model(str(tmp_path)) == str(tmp_path / "name" / "1" / "model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No MLflow model"):
        find_mlflow_model(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_mlflow_model(str(tmp_path / "absent"))


# -- main.py's pieces


def test_model_folder_shows_the_model_under_its_name(tmp_path: Path) -> None:
    first, second = tmp_path / "v1", tmp_path / "v2"
    (first / "sub").mkdir(parents=True), second.mkdir()
    (first / "MLmodel").write_text("one"), (first / "sub" / "w.bin").write_text("w")
    (second / "MLmodel").write_text("2")
    state_file = tmp_path / "run" / "state.json"
    state_file.parent.mkdir()
    folder = Path(model_folder(str(first), "sklearn_model", str(state_file)))
    assert folder == tmp_path / "run" / "azureml-models"
    shown = folder / "sklearn_model"
    # real folders and files, no links (MLflow refuses those, see model_folder); the data is shared, not copied
    assert not shown.is_symlink() and not (shown / "MLmodel").is_symlink()
    assert (shown / "MLmodel").read_text() == "one" and (shown / "sub" / "w.bin").read_text() == "w"
    assert os.path.samefile(shown / "sub" / "w.bin", first / "sub" / "w.bin")
    model_folder(str(second), "sklearn_model", str(state_file))  # a restart rebuilds it
    assert sorted(os.listdir(shown)) == ["MLmodel"] and (shown / "MLmodel").read_text() == "2"
    assert sorted(os.listdir(folder)) == ["sklearn_model"]
    assert (first / "MLmodel").read_text() == "one" and (first / "sub" / "w.bin").exists()  # the staged model stays
    model_folder(str(second / "MLmodel"), "model.pkl", str(state_file))  # a model that is one file
    assert (folder / "model.pkl").read_text() == "2"


def test_model_folder_falls_back_to_copies_and_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cible.serving.main as serving_main

    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "MLmodel").write_text("small")
    (staged / "weights.bin").write_bytes(b"x" * 64)

    def no_hard_links(*_: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(serving_main.os, "link", no_hard_links)
    import cible.serving.model_dir as model_dir

    monkeypatch.setattr(model_dir, "SMALL_FILE", 16)
    shown = Path(model_folder(str(staged), "m", str(tmp_path / "state.json"))) / "m"
    assert not (shown / "MLmodel").is_symlink() and (shown / "MLmodel").read_text() == "small"
    assert os.readlink(shown / "weights.bin") == str(staged / "weights.bin")


def test_state_file_is_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "s" / "state.json"
    write_state(str(path), 8123, False, "init() failed: boom")
    assert json.loads(path.read_text()) == {"port": 8123, "pid": os.getpid(), "ready": False,
                                            "error": "init() failed: boom"}
    assert os.listdir(path.parent) == ["state.json"]


def test_accepted_sockets_have_tcp_nodelay() -> None:
    listener = listen_socket("127.0.0.1", 0)
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    try:
        assert listener.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY only on sockets that say so
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        for sock in (accepted, client, listener):
            sock.close()


def test_codec_handles_what_orjson_does_not() -> None:
    assert json.loads(codec.dumps({"big": 2**70, 1: "non-str key"})) == {"big": 2**70, "1": "non-str key"}


def test_reload_waits_for_a_change_to_settle(tmp_path: Path) -> None:
    script = tmp_path / "score.py"
    script.write_text("v1")
    reloads = []
    watcher = ScriptWatcher(str(tmp_path), str(script), lambda: reloads.append(script.read_text()))
    seen = watcher.tick(watcher._loaded)
    assert reloads == []
    script.write_text("v2 (longer)")
    seen = watcher.tick(seen)  # changed, not yet settled
    assert reloads == []
    seen = watcher.tick(seen)  # the same as one tick ago: reload
    assert reloads == ["v2 (longer)"]
    (tmp_path / "helper.py").write_text("x = 1")
    seen = watcher.tick(watcher.tick(seen))
    assert len(reloads) == 2


# -- what the server may import (it runs in the user's environment: cible's dependencies are absent)

SERVING = Path(__file__).resolve().parents[2] / "src" / "cible" / "serving"
ALLOWED = {"uvicorn", "orjson", "inference_schema"}
MLFLOW_PATH_ONLY = {"mlflow", "numpy", "pandas"}


def test_serving_imports_only_the_standard_library_uvicorn_and_optional_packages() -> None:
    import ast

    crossings = []
    for path in sorted(SERVING.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                top = name.split(".")[0]
                ok = (top in sys.stdlib_module_names or top in ALLOWED or name in ("cible", "cible.serving")
                      or name.startswith("cible.serving.")
                      or (top in MLFLOW_PATH_ONLY and path.name == "mlflow_model.py"))
                if not ok:
                    crossings.append(f"{path.name}:{node.lineno} imports {name}")
    assert not crossings, "\n".join(crossings)


def test_loading_the_server_pulls_in_none_of_cibles_dependencies() -> None:
    import subprocess

    code = ("import sys, cible.serving.main, cible.serving.mlflow_model\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'fastapi', 'starlette', 'numpy',"
            " 'pandas', 'mlflow', 'sqlalchemy') or m.startswith(('cible.core', 'cible.server'))]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_reload_forgets_the_scripts_helpers_and_nothing_installed(tmp_path: Path) -> None:
    from cible.serving.script import forget_modules_under

    (tmp_path / "helper_for_reload.py").write_text("VALUE = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import helper_for_reload  # noqa: F401

        before = dict(sys.modules)
        forget_modules_under(str(tmp_path))
        assert set(before) - set(sys.modules) == {"helper_for_reload"}
        forget_modules_under("/")  # even an app root above everything spares what is installed, and cible
        gone = set(before) - set(sys.modules)
        sys.modules.update(before)  # the test modules it dropped (under "/" too) come back
        assert "json" not in gone and "uvicorn" not in gone and "cible.serving.app" not in gone
        assert all("site-packages" not in (before[name].__file__ or "") for name in gone)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("helper_for_reload", None)


def test_a_fault_of_the_server_is_a_json_500(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = serve(tmp_path, RAW)

    def broken(*_: object) -> None:
        raise RuntimeError("a bug in the server")

    monkeypatch.setattr(app, "_health", broken)
    answer = call(app, "GET", "/")
    assert (answer.status, answer.json()["message"]) == (500, "An unexpected internal error occurred. Check the logs "
                                                              "for more info.")


def test_a_client_gone_before_its_body_gets_no_run(tmp_path: Path) -> None:
    app = serve(tmp_path, RAW)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/score", "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))
    assert sent == []
