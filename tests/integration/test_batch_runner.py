"""Batch jobs end to end: a real workspace server (in this process, so the job can be made the way a batch
invoke makes it: `JobService.create_child` with the deployment's settings block), a cluster of the local
node provider, agents, launchers, `python -m cible.serving.batch` with its workers and a scoring script."""

from __future__ import annotations

import socket
import textwrap
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from cible.server.services.jobs import Lineage
from cible.testing import wait_until

pytestmark = pytest.mark.timeout(240)

TOKEN = "batch-test-token"
BLOCK = {"endpoint": "e", "deployment": "d", "mini_batch_size": 2, "max_concurrency_per_instance": 2,
         "output_action": "append_row", "output_file_name": "predictions.csv", "max_retries": 1, "timeout": 30,
         "error_threshold": -1, "logging_level": "info", "input": "input_data", "output": "score", "mlflow": False}
SCORE = """
    import os
    import pandas as pd

    def init():
        global scale
        scale = 10

    def run(mini_batch):
        frames = []
        for path in mini_batch:
            name = os.path.basename(path)
            if name.startswith("bad"):
                raise ValueError(f"cannot score {name}")
            data = pd.read_csv(path)
            frames.append(pd.DataFrame({"file": name, "x": data["x"], "y": data["x"] * scale}))
        return pd.concat(frames)
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    import uvicorn

    from cible import MLClient
    from cible.server.app import create_app
    from cible.server.settings import ServerSettings
    from cible.testing import kill_nodes

    home = tmp_path_factory.mktemp("batch-ws")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(ServerSettings(home=home, tracking=False, token=TOKEN), TOKEN, url=url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    ml = None
    try:
        wait_until(lambda: server.started, 60, message="the workspace server to start")
        ml = MLClient(url=url, token=TOKEN)
        ml.compute.begin_create_or_update({"name": "cpu-cluster", "type": "amlcompute", "size": "Standard_DS1_v2",
                                           "min_instances": 0, "max_instances": 2,
                                           "idle_time_before_scale_down": 600}).result()
        yield app, ml, home
    finally:
        if ml is not None:
            ml.close()
        app.state.hub.release_all()  # agents' long-polls would hold the shutdown (as process.py does)
        server.should_exit = True
        thread.join(30)
        sock.close()
        kill_nodes(home)
        for proc in psutil.process_iter(["cmdline"]):
            if any(str(home) in part for part in proc.info["cmdline"] or ()):
                try:
                    proc.kill()
                except psutil.Error:
                    pass


def submit(workspace: Any, tmp: Path, name: str, files: dict[str, str], score: str = SCORE, model: Path | None = None,
           **block: Any) -> None:
    """A job as a batch invoke makes it: a scoring script in `code`, or (with `model`) the no-code MLflow driver."""
    from cible.sdk.job_bodies import upload_local_paths

    app, ml, _ = workspace
    code, data = tmp / name / "code", tmp / name / "data"
    for folder, contents in ((code, {"score.py": textwrap.dedent(score)}), (data, files)):
        folder.mkdir(parents=True)
        for rel, text in contents.items():
            (folder / rel).write_text(text)
    command = "python -m cible.serving.batch --input ${{inputs.input_data}} --output ${{outputs.score}} "
    body = {"type": "command", "code": str(code), "compute": "azureml:cpu-cluster",
            "command": command + "--entry-script score.py --app-root .",
            "inputs": {"input_data": {"type": "uri_folder", "path": str(data)}},
            "outputs": {"score": {"type": "uri_folder"}}, "experiment_name": "e", "display_name": "e/d",
            "resources": {"instance_count": 1}}
    if model is not None:
        del body["code"]
        body["command"] = command + f"--model-path ${{{{inputs.model}}}} --model-name {model.name} --mlflow-model"
        body["inputs"]["model"] = {"type": "mlflow_model", "path": str(model), "mode": "ro_mount"}
        block = {**block, "mlflow": True}
    upload_local_paths(ml._client, body)
    app.state.jobs.create_child(name, body, Lineage(batch_of="e/d", batch={**BLOCK, **block}))


def ended(workspace: Any, name: str) -> dict[str, Any]:
    _, ml, _ = workspace
    wait_until(lambda: ml.jobs.get(name)["status"] in ("Completed", "Failed", "Canceled"), 150,
               message=f"job {name} to end")
    return ml.jobs.get(name)


def output_file(workspace: Any, name: str) -> Path:
    app, _, _ = workspace
    return Path(app.state.jobs.run_handle(name)[1].plan["outputs"]["score"]["local_path"]) / "predictions.csv"


def csv(*values: int) -> str:
    return "x\n" + "".join(f"{v}\n" for v in values)


CRASHING = """
    import os
    import time

    def init():
        pass

    def run(mini_batch):
        for path in mini_batch:
            if path.endswith("die.csv"):
                os._exit(9)
            if path.endswith("slow.csv"):
                time.sleep(30)
        return [os.path.basename(path) for path in mini_batch]
"""


SUMMARY_ONLY = """
    import os

    def init():
        pass

    def run(mini_batch):  # writes its own files (Azure's parquet example) and returns what it did
        for path in mini_batch:
            out = os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], os.path.basename(path) + ".done")
            with open(out, "w") as fh:
                fh.write("seen")
        return mini_batch
"""


def mlflow_model(tmp: Path) -> Path:
    """A small MLflow model (y = 2x), saved the way a registered model's folder holds it."""
    import mlflow.sklearn
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(pd.DataFrame({"x": [0.0, 1.0, 2.0]}), [0.0, 2.0, 4.0])
    mlflow.sklearn.save_model(model, str(tmp / "models" / "lin"))
    return tmp / "models" / "lin"


def test_batch_jobs(workspace: Any, tmp_path: Path) -> None:
    """Seven jobs at once (the cluster has two nodes): a no-code MLflow one; one that completes with a failing
    mini-batch retried and recorded; one whose error_threshold is exceeded (partial results kept); one whose
    worker dies and times out; one whose scoring script has no run(); one whose init() raises; a summary_only
    one whose script writes its own files to AZUREML_BI_OUTPUT_PATH."""
    model = mlflow_model(tmp_path)
    submit(workspace, tmp_path, "batch-mlflow", {"one.csv": csv(3, 4), "two.csv": csv(5)}, model=model,
           mini_batch_size=1)
    submit(workspace, tmp_path, "batch-ok", {"a.csv": csv(1, 2), "b.csv": csv(3), "bad.csv": csv(9),
                                             "c.csv": csv(4), "d.csv": csv(5, 6)})
    submit(workspace, tmp_path, "batch-threshold", {"a1.csv": csv(1), "a2.csv": csv(2), "bad.csv": csv(3),
                                                    "c.csv": csv(4)},
           error_threshold=0, max_retries=0, max_concurrency_per_instance=1)
    submit(workspace, tmp_path, "batch-crash", {"a.csv": "", "die.csv": "", "slow.csv": ""}, score=CRASHING,
           mini_batch_size=1, max_concurrency_per_instance=1, max_retries=0, timeout=2)
    submit(workspace, tmp_path, "batch-init-fails", {"a.csv": ""}, max_retries=1,
           score="def init():\n    raise RuntimeError('no model here')\n\ndef run(mini_batch):\n    return mini_batch\n")
    submit(workspace, tmp_path, "batch-no-run", {"a.csv": csv(1)}, score="def init():\n    pass\n")
    submit(workspace, tmp_path, "batch-summary", {"p.csv": csv(1), "q.csv": csv(2)}, score=SUMMARY_ONLY,
           output_action="summary_only", mini_batch_size=1)

    ok = ended(workspace, "batch-ok")
    assert ok["status"] == "Completed", ok.get("error")
    # sorted: (a, b) (bad, c) (d): the second mini-batch raised, was retried once, and is recorded failed
    assert output_file(workspace, "batch-ok").read_text() == "a.csv 1 10\na.csv 2 20\nb.csv 3 30\nd.csv 5 50\nd.csv 6 60\n"
    assert sorted(p.name for p in output_file(workspace, "batch-ok").parent.iterdir()) == ["predictions.csv"]
    batch = ok["batch"]
    assert (batch["total"], batch["done"], batch["failed"], batch["rows"]) == (3, 2, 1, 5)
    [failed] = batch["failed_mini_batches"]
    assert (failed["index"], failed["files"], failed["tries"]) == (1, ["bad.csv", "c.csv"], 2)
    assert failed["error"] == "ValueError: cannot score bad.csv"

    over = ended(workspace, "batch-threshold")
    assert over["status"] == "Failed"
    assert "error_threshold 0 exceeded: 2 files failed" in over["error"]["message"]
    assert over["batch"]["outcome"] == "failed" and "cannot score bad.csv" in over["batch"]["reason"]
    assert output_file(workspace, "batch-threshold").read_text() == "a1.csv 1 10\na2.csv 2 20\n"  # kept

    scored = ended(workspace, "batch-mlflow")
    assert scored["status"] == "Completed", scored.get("error")
    rows = [line.split(" ") for line in output_file(workspace, "batch-mlflow").read_text().splitlines()]
    assert [(r[0], round(float(r[1]), 6), r[2]) for r in rows] == [("0", 6.0, "one.csv"), ("1", 8.0, "one.csv"),
                                                                  ("0", 10.0, "two.csv")]

    crash = ended(workspace, "batch-crash")  # a worker that dies is replaced; run() past its timeout is stopped
    assert crash["status"] == "Completed", crash.get("error")
    assert output_file(workspace, "batch-crash").read_text() == "a.csv\n"
    assert [(f["files"], f["error"]) for f in crash["batch"]["failed_mini_batches"]] == [
        (["die.csv"], "worker died: exit code 9"), (["slow.csv"], "timed out: run() took longer than the timeout of 2 s")]

    no_run = ended(workspace, "batch-no-run")
    assert no_run["status"] == "Failed"
    assert "does not have a run() function" in no_run["error"]["message"]
    assert "does not have a run() function" in no_run["batch"]["reason"]

    init_fails = ended(workspace, "batch-init-fails")  # a new worker is tried max_retries times, then the job fails
    assert init_fails["status"] == "Failed"
    assert init_fails["batch"]["reason"] == "init() failed: RuntimeError: no model here (after 2 tries)"

    summary = ended(workspace, "batch-summary")
    assert summary["status"] == "Completed", summary.get("error")
    assert (summary["batch"]["done"], summary["batch"]["rows"]) == (2, 2)
    folder = output_file(workspace, "batch-summary").parent  # the script's files only: nothing appended
    assert sorted(p.name for p in folder.iterdir()) == ["p.csv.done", "q.csv.done"]
