"""`python -m cible.serving` as a real process on 127.0.0.1, spoken to over real HTTP: the state file and
banner, the model folder, the three run() modes and request_headers, Azure's 500s (run raising, the
timeout), an init() that raises, swagger.json from inference-schema decorators, --reload, an MLflow
model served without a script, and keep-alive without the Nagle stall."""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cible.serving.main import model_folder
from cible.testing import wait_until

SRC = Path(__file__).resolve().parents[2] / "src"
RUN_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."


class Replica:
    """A running server: its state file, its output, and requests to it."""

    def __init__(self, process: subprocess.Popen, state_file: Path, out: Path, err: Path) -> None:
        self.process, self.state_file, self.out, self.err = process, state_file, out, err
        self.port = self.state()["port"]

    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection()
        try:
            return _exchange(conn, method, path, body, headers)
        finally:
            conn.close()

    def score(self, payload: object, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
        status, answer_headers, body = self.request("POST", "/score", json.dumps(payload),
                                                    {"Content-Type": "application/json", **(headers or {})})
        return status, answer_headers, json.loads(body)


def _exchange(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | str | None,
              headers: dict[str, str] | None) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


@contextmanager
def replica(folder: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Replica]:
    """`python -m cible.serving --port 0 --state-file ... ARGS` in `folder`, until it has written its state file."""
    state_file = folder / "run" / ".cible-serving.json"
    out, err = folder / "stdout.txt", folder / "stderr.txt"
    environment = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "cible.serving", "--port", "0", "--state-file",
                                    str(state_file), *args], stdout=stdout, stderr=stderr, env=environment, cwd=folder)
    try:
        wait_until(lambda: state_file.exists() or process.poll() is not None, timeout=90, message="the state file")
        assert process.poll() is None, f"the server exited: {err.read_text()}"
        yield Replica(process, state_file, out, err)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


# -- raw mode with a scikit-learn model from AZUREML_MODEL_DIR

RAW_SCRIPT = """
import json, os, time
import joblib
import numpy as np

def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "sklearn_model", "model.joblib"))
    model.predict(np.zeros((1, 3)))  # warm: the first predict's lazy imports happen here, not under the timeout

def run(raw_data, request_headers):
    data = json.loads(raw_data)
    if data.get("fail"):
        raise RuntimeError("the scoring script exploded")
    if data.get("sleep"):
        time.sleep(data["sleep"])
    return {"predictions": model.predict(np.asarray(data["data"])), "who": request_headers.get("X-Who")}
"""


@pytest.fixture(scope="module")
def sklearn_model(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 3))
    model = LogisticRegression().fit(features, (features[:, 0] + features[:, 1] > 0).astype(int))
    folder = tmp_path_factory.mktemp("staged") / "model-files"
    folder.mkdir()
    joblib.dump(model, folder / "model.joblib")
    return folder, model


@pytest.fixture(scope="module")
def raw_replica(tmp_path_factory: pytest.TempPathFactory, sklearn_model) -> Iterator[Replica]:  # noqa: ANN001
    folder = tmp_path_factory.mktemp("raw")
    write(folder / "src", "score.py", RAW_SCRIPT)
    staged, _ = sklearn_model
    with replica(folder, "--app-root", str(folder / "src"), "--entry-script", "score.py", "--model-path", str(staged),
                 "--model-name", "sklearn_model", "--request-timeout-ms", "1500") as server:
        yield server


def test_the_state_file_and_banner_say_where_it_listens(raw_replica: Replica) -> None:
    assert raw_replica.state() == {"port": raw_replica.port, "pid": raw_replica.process.pid, "ready": True,
                                   "error": None}
    banner = wait_until(lambda: [line for line in raw_replica.stdout().splitlines()
                                 if line.startswith("cible scoring server: listening")], timeout=10)
    assert f"http://127.0.0.1:{raw_replica.port}" in banner[0] and "score.py (raw)" in banner[0]
    models = raw_replica.state_file.parent / "azureml-models"
    assert f"model dir {models}" in banner[0]
    assert (models / "sklearn_model" / "model.joblib").is_file()
    assert raw_replica.request("GET", "/")[::2] == (200, b"Healthy")


def test_raw_mode_scores_with_the_model_and_sees_the_headers(raw_replica: Replica, sklearn_model) -> None:  # noqa: ANN001
    _, model = sklearn_model
    rows = [[0.5, 0.5, 0.0], [-1.0, -1.0, 0.3]]
    status, headers, body = raw_replica.score({"data": rows}, {"X-Who": "tester", "x-request-id": "rid-1"})
    assert status == 200 and body == {"predictions": model.predict(rows).tolist(), "who": "tester"}
    assert (headers["x-request-id"], headers["x-ms-run-function-failed"]) == ("rid-1", "False")
    assert headers["x-ms-server-version"].startswith("cible/") and float(headers["x-ms-run-fn-exec-ms"]) >= 0


def test_run_raising_is_a_500_and_the_traceback_is_in_the_log(raw_replica: Replica) -> None:
    status, headers, body = raw_replica.score({"fail": True})
    assert (status, body, headers["x-ms-run-function-failed"]) == (500, {"message": RUN_FAILED}, "True")
    log = wait_until(lambda: "the scoring script exploded" in raw_replica.stderr() and raw_replica.stderr(),
                     timeout=10)
    assert "Traceback (most recent call last)" in log and "RuntimeError: the scoring script exploded" in log
    assert raw_replica.score({"data": [[0, 0, 0]]})[0] == 200


def test_a_run_past_the_timeout_gets_azures_500(raw_replica: Replica) -> None:
    started = time.monotonic()
    status, headers, body = raw_replica.score({"sleep": 20, "data": []})
    assert (status, body) == (500, {"message": "Scoring timeout after 1500 ms"})
    assert headers["x-ms-run-function-failed"] == "True" and time.monotonic() - started < 10
    assert raw_replica.score({"data": [[0, 0, 0]]})[0] == 200


def test_keep_alive_requests_do_not_stall(raw_replica: Replica) -> None:
    """One connection, sequential requests: each answer is two writes (headers, body), so a socket without
    TCP_NODELAY would wait ~40 ms per request for the client's delayed ACK (perf-anchors §4.3)."""
    conn = raw_replica.connection()
    body, headers = json.dumps({"data": [[0.1, 0.2, 0.3]]}), {"Content-Type": "application/json"}
    try:
        _exchange(conn, "POST", "/score", body, headers)
        sock = conn.sock
        latencies = []
        for _ in range(40):
            started = time.perf_counter()
            assert _exchange(conn, "POST", "/score", body, headers)[0] == 200
            latencies.append(time.perf_counter() - started)
        assert conn.sock is sock  # the same connection throughout
    finally:
        conn.close()
    assert statistics.median(latencies) < 0.02, latencies


def test_a_port_in_use_fails_at_once_saying_so(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "cible.serving", "--port", str(port), "--state-file",
                               str(tmp_path / "state.json")], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(SRC)}, cwd=tmp_path)
    assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert not (tmp_path / "state.json").exists()


# -- init() raising


def test_init_raising_leaves_the_server_up_but_unready(tmp_path: Path) -> None:
    write(tmp_path / "src", "score.py", """
        def init():
            raise FileNotFoundError("model.pkl is not in the model folder")
        def run(raw):
            return raw
    """)
    with replica(tmp_path, "--app-root", str(tmp_path / "src"), "--entry-script", "score.py") as server:
        state = server.state()
        assert state["ready"] is False
        assert state["error"] == "init() failed: FileNotFoundError: model.pkl is not in the model folder"
        status, _, body = server.request("GET", "/")
        assert (status, json.loads(body)) == (503, {"message": state["error"]})
        assert "Traceback (most recent call last)" in server.stderr()
        assert server.process.poll() is None


# -- inference-schema mode and swagger.json


def test_schema_mode_and_swagger_from_the_decorators(tmp_path: Path) -> None:
    write(tmp_path / "code" / "onlinescoring", "score.py", """
        import numpy as np
        from inference_schema.schema_decorators import input_schema, output_schema
        from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
        from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType

        def init():
            pass

        @input_schema("iris", NumpyParameterType(np.array([[5.1, 3.5, 1.4, 0.2]])))
        @output_schema(StandardPythonParameterType([1.0]))
        def run(iris):
            return iris.sum(axis=1)
    """)
    env = {"AML_APP_ROOT": str(tmp_path / "code" / "onlinescoring"), "AZUREML_ENTRY_SCRIPT": "score.py"}
    with replica(tmp_path, env=env) as server:  # no flags: Azure's variables name the script
        assert server.score({"iris": [[1, 2, 3, 4], [0, 0, 0, 1]]})[::2] == (200, [10.0, 1.0])
        status, _, body = server.request("POST", "/score", '{"iris": [[1, 2, 3, 4]]}', {"Content-Type": "text/plain"})
        assert (status, json.loads(body)) == (415, {"message": "Expects Content-Type to be application/json"})
        status, _, body = server.request("GET", "/swagger.json")
        swagger = json.loads(body)
        assert status == 200 and swagger["swagger"] == "2.0"
        assert swagger["definitions"]["ServiceInput"]["example"] == {"iris": [[5.1, 3.5, 1.4, 0.2]]}
        assert swagger["definitions"]["ServiceInput"]["properties"]["iris"]["type"] == "array"


# -- rawhttp


def test_rawhttp_with_the_old_import_names(tmp_path: Path) -> None:
    write(tmp_path / "src", "score.py", """
        from azureml.contrib.services.aml_request import AMLRequest, rawhttp
        from azureml.contrib.services.aml_response import AMLResponse

        def init():
            pass

        @rawhttp
        def run(request):
            if request.method != "POST":
                return AMLResponse("POST only", 405)
            data = request.get_data()
            return AMLResponse(data[::-1], 201, {"Content-Type": "application/octet-stream", "X-Size": str(len(data))})
    """)
    with replica(tmp_path, "--app-root", str(tmp_path / "src"), "--entry-script", "score.py") as server:
        status, headers, body = server.request("POST", "/score", b"\x01\x02\x03")
        assert (status, body, headers["content-type"], headers["x-size"]) == \
            (201, b"\x03\x02\x01", "application/octet-stream", "3")
        assert server.request("GET", "/score")[::2] == (405, b"POST only")


# -- --reload


def test_reload_picks_up_an_edited_script(tmp_path: Path) -> None:
    script = write(tmp_path / "src", "score.py", """
        def init():
            global version
            version = "v1"
        def run(raw):
            return version
    """)
    with replica(tmp_path, "--app-root", str(tmp_path / "src"), "--entry-script", "score.py", "--reload") as server:
        assert server.score({})[2] == "v1"
        script.write_text(script.read_text().replace('"v1"', '"v2"'))
        wait_until(lambda: server.score({})[2] == "v2", timeout=20, message="the edited script")
        script.write_text("def init():\n    raise RuntimeError('broken edit')\ndef run(raw):\n    return raw\n")
        wait_until(lambda: server.request("GET", "/")[0] == 503, timeout=20, message="the broken edit")
        assert server.state()["ready"] is False and "broken edit" in server.state()["error"]
        script.write_text("def init():\n    pass\ndef run(raw):\n    return 'v3'\n")
        wait_until(lambda: server.state()["ready"], timeout=20, message="the fixed script")
        assert server.score({})[2] == "v3"


# -- MLflow without a scoring script


def test_an_mlflow_model_is_served_without_a_script(tmp_path: Path) -> None:
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"age": [20.0, 35, 50, 65, 30, 45], "income": [1.0, 3, 2, 5, 4, 1]})
    model = LogisticRegression().fit(frame, [0, 1, 0, 1, 1, 0])
    path = tmp_path / "mlflow-model"
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(frame, model.predict(frame)),
                              pip_requirements=["scikit-learn"], serialization_format="cloudpickle")
    rows = frame.iloc[:3]
    expected = model.predict(rows).tolist()
    with replica(tmp_path, "--mlflow-model", "--model-path", str(path), "--model-name", "credit") as server:
        assert server.state()["ready"], server.stderr()
        banner = wait_until(lambda: "listening" in server.stdout() and server.stdout(), timeout=10)
        assert "MLflow model " + str(server.state_file.parent / "azureml-models" / "credit") in banner
        split = {"columns": ["age", "income"], "index": [0, 1, 2], "data": rows.values.tolist()}
        assert server.score({"input_data": split})[::2] == (200, expected)
        assert server.score({"input_data": rows.to_dict(orient="records")})[2] == expected
        assert server.score({"input_data": rows.to_dict(orient="list")})[2] == expected
        assert server.score({"dataframe_split": split})[2] == expected
        status, _, body = server.request("POST", "/score", "{not json", {"Content-Type": "application/json"})
        assert status == 400 and json.loads(body)["message"].startswith("The request body is not valid JSON")
    # A scoring script of its own loads it the way Azure's MLflow samples do, from AZUREML_MODEL_DIR/<name>.
    models = model_folder(str(path), "credit", str(tmp_path / "other" / "state.json"))
    assert mlflow.pyfunc.load_model(os.path.join(models, "credit")).predict(rows).tolist() == expected
