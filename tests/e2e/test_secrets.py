"""A job cannot get at the workspace: not its token, not its database, not another job's MLflow run.

One workspace with MLflow on, a job on `local` and one on a cluster node. Each runs a probe that
tries what a curious or hostile command would try and prints what it got; afterwards no file of
the workspace but `token` holds the token, and MLflow's child answers nobody but the server.
"""

from __future__ import annotations

import json
from pathlib import Path

import cible
import httpx
import psutil
import pytest
from e2e_support import Workspace, write_yaml

PROBE = r'''
import json, os, sys, urllib.request, urllib.error
home, server_pid, other_run, installed = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
uri, token, run_id = os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_TRACKING_TOKEN"], os.environ["MLFLOW_RUN_ID"]
base = uri.rsplit("/mlflow", 1)[0]
found = {}

def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code

def readable(path):
    try:
        with open(path, "rb") as fh:
            fh.read(1)
        return True
    except OSError:
        return False

found["token_readable"] = readable(os.path.join(home, "token"))
found["db_readable"] = readable(os.path.join(home, "cible.db"))
found["home_entries"] = sorted(os.listdir(home))
found["server_mem_readable"] = readable(f"/proc/{server_pid}/mem")
found["server_root_listable"] = os.access(f"/proc/{server_pid}/root{home}", os.R_OK)
found["server_environ_readable"] = readable(f"/proc/{server_pid}/environ")
found["server_env"] = sorted(k for k in os.environ if k.startswith("CIBLE_") or k.startswith("RAY_AUTH"))
try:
    open(os.path.join(installed, "planted.py"), "w").close()
    found["installation_writable"] = True
except OSError:
    found["installation_writable"] = False
found["list_jobs"] = call("GET", f"{base}/api/v1/jobs")
found["own_metric"] = call("POST", f"{uri}/api/2.0/mlflow/runs/log-metric",
                           {"run_id": run_id, "key": "probe", "value": 1, "timestamp": 0})
found["other_metric"] = call("POST", f"{uri}/api/2.0/mlflow/runs/log-metric",
                             {"run_id": other_run, "key": "probe", "value": 1, "timestamp": 0})
print("PROBE " + json.dumps(found))
'''


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    workspace = Workspace(tmp_path_factory.mktemp("secrets"), tracking=True)
    workspace.cible("server", "start")
    yield workspace
    workspace.stop()


def run_probe(ws: Workspace, name: str, compute: str, other_run: str) -> dict:
    code = ws.cwd / "probe"
    code.mkdir(exist_ok=True)
    (code / "probe.py").write_text(PROBE)
    pid = ws.server_info()["pid"]
    spec = write_yaml(ws.cwd, f"{name}.yml", f"""
        command: python probe.py {ws.home} {pid} {other_run} {Path(cible.__file__).parent}
        code: probe
        compute: {compute}
        experiment_name: secrets
        """)
    ws.cible("job", "create", "-f", spec, "-n", name)
    job = ws.wait_status(name, timeout=240)
    log = ws.run_log(name)
    assert job["status"] == "Completed", log
    line = next(line for line in log.splitlines() if line.startswith("PROBE "))
    return json.loads(line[len("PROBE "):])


def test_jobs_cannot_reach_the_workspace_or_other_runs(ws: Workspace):
    first = run_probe(ws, "probe-local-1", "local", "0" * 32)
    run_id = ws.job("probe-local-1")["mlflow_run_id"]
    ws.cible("compute", "create", "-n", "probe-cluster", "--type", "amlcompute", "--size", "Standard_DS1_v2",
             "--min-instances", "0", "--max-instances", "1")
    on_node = run_probe(ws, "probe-node-1", "probe-cluster", run_id)
    for found in (first, on_node):
        assert found["token_readable"] is False and found["db_readable"] is False, found
        assert set(found["home_entries"]) <= {"runs", "datastores", "nodes"}, found
        assert found["server_mem_readable"] is False and found["server_root_listable"] is False, found
        assert found["server_environ_readable"] is False, found
        assert set(found["server_env"]) <= {"CIBLE_RESUME", "CIBLE_ATTEMPT"}, found  # none of the server's
        assert found["installation_writable"] is False, found  # cible's own code: read-only to jobs
        assert found["list_jobs"] == 403, found  # a job's token cannot list jobs
        assert found["own_metric"] == 200, found  # but logs into its own run
    assert on_node["other_metric"] == 403  # and not into another job's run


def test_no_file_of_the_workspace_but_token_holds_the_token(ws: Workspace):
    token = (ws.home / "token").read_bytes().strip()
    assert len(token) >= 32
    holders = [str(p.relative_to(ws.home)) for p in ws.home.rglob("*")
               if p.is_file() and p.name != "token" and token in p.read_bytes()]
    assert holders == []


def test_mlflow_child_answers_nobody_but_the_server(ws: Workspace):
    children = [p for p in psutil.process_iter(["cmdline"])
                if "cible.server.tracking" in " ".join(p.info["cmdline"] or []) and str(ws.home) in p.info["cmdline"]]
    assert children, "no MLflow child found"
    port = children[0].info["cmdline"][-1]
    for path in ("/mlflow/health", "/mlflow/api/2.0/mlflow/experiments/search"):
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
        assert response.status_code == 403, response.text
