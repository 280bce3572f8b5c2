"""Jobs on attached machines end to end: the CLI against a real server whose nodes are agents
started over SSH on loopback "machines" (127.0.0.5x, an sshd each, so one can hang alone). The
agents log in as a user of their own who cannot read the workspace: every file a job reads or
writes travels over the agent's HTTP connection, and the server is reached through the SSH tunnel."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import REPO, Workspace, wait_until, write_yaml

from cible.testing.sshd import LoopbackSshd, ensure_user, keygen, package_access, sshd_missing

USER = "cible-attached"
HOSTS = {"m1": "127.0.0.51", "m2": "127.0.0.52", "m3": "127.0.0.53"}


@pytest.fixture(scope="module", autouse=True)
def _needs_sshd() -> None:
    if why := sshd_missing():  # CI installs openssh-server (scripts/test.sh): there, a missing sshd fails
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(why)


@pytest.fixture(scope="module")
def machines() -> Iterator[tuple[dict[str, LoopbackSshd], Path, Path]]:
    """One sshd per machine; the key (the server's, mode 600) and the login user's home."""
    home = ensure_user(USER)
    root = Path(tempfile.mkdtemp(prefix="cible-attached-"))
    root.chmod(0o755)  # sshd reads the authorized keys as the login user
    key = keygen(root / "keys" / "id_ed25519")
    servers = {}
    try:
        for name, address in HOSTS.items():
            servers[name] = LoopbackSshd(root / name, (address,), package_access())
            servers[name].authorize(USER, key.with_suffix(".pub"))
            servers[name].start()
        yield servers, key, home
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(home / ".cible-agent", ignore_errors=True)


@pytest.fixture
def ws(tmp_path: Path, machines) -> Iterator[Workspace]:  # noqa: ANN001
    workspace = Workspace(tmp_path / "ws")
    workspace.env["CIBLE_NODE_HEARTBEAT_TIMEOUT"] = "4"  # a hung machine is written off quickly
    yield workspace
    workspace.stop()
    _machines_off()


def _machines_off() -> None:
    """The test's machines are switched off: their agents outlive a stopped server (as on real
    machines, for 10 minutes), which the next tests need not pay for."""
    import subprocess

    subprocess.run(["pkill", "-KILL", "-u", USER], check=False)


def attach(ws: Workspace, machines, name: str) -> dict:  # noqa: ANN001
    servers, key, _ = machines
    return ws.json("compute", "attach", "--name", name, "--host", HOSTS[name], "--ssh-port", servers[name].port,
                   "--admin-username", USER, "--ssh-private-key-file", key, "--tunnel", "always")


def job(ws: Workspace, name: str, compute: str, body: str) -> str:
    spec = write_yaml(ws.cwd, f"{name}.yml", f"""
        environment: {{image: python:3.11-slim}}
        compute: azureml:{compute}
        {body}
        """)
    return ws.json("job", "create", "-f", spec, "-n", name)["name"]


def remote_agent_pid(machines, node_id: str) -> int:  # noqa: ANN001
    _, _, home = machines
    return json.loads((home / ".cible-agent" / "nodes" / node_id / "agent.json").read_text())["pid"]


def test_a_job_runs_on_an_attached_machine_without_the_workspace(ws: Workspace, machines) -> None:  # noqa: ANN001
    attach(ws, machines, "m1")
    (ws.cwd / "src").mkdir()
    (ws.cwd / "src" / "main.py").write_text(
        "import os, sys\n"
        "print('uid', os.getuid(), 'workspace readable:', os.access(os.environ['CIBLE_HOME_PROBE'], os.R_OK))\n"
        "text = open(sys.argv[1]).read()\n"
        "open(os.path.join(sys.argv[2], 'upper.txt'), 'w').write(text.upper())\n"
        "print('read', len(text), 'bytes')\n")
    (ws.cwd / "data.txt").write_text("attached machines need nothing but python\n")
    name = job(ws, "code-io", "m1", f"""
        code: src
        command: python3 main.py ${{{{inputs.data}}}} ${{{{outputs.result}}}}
        environment_variables: {{CIBLE_HOME_PROBE: "{ws.home}"}}
        inputs:
          data: {{type: uri_file, path: ./data.txt}}
        outputs:
          result: {{type: uri_folder}}
        """)
    done = ws.wait_status(name, timeout=120)
    assert done["status"] == "Completed", done
    log = ws.run_log(name)
    import pwd

    assert f"uid {pwd.getpwnam(USER).pw_uid} workspace readable: False" in log and "read 42 bytes" in log
    dest = ws.cwd / "download"
    ws.cible("job", "download", "-n", name, "--output-name", "result", "-p", dest)
    assert (dest / "named-outputs" / "result" / "upper.txt").read_text() == "ATTACHED MACHINES NEED NOTHING BUT PYTHON\n"
    shown = ws.json("compute", "show", "-n", "m1")
    assert shown["provider_status"]["reachable"] and shown["current_node_count"] == 1  # kept warm for the next job
    # A job of two nodes cannot run on one machine: refused at submit, saying where it can.
    refused = ws.cible("job", "create", "-f", write_yaml(ws.cwd, "two.yml", """
        command: echo two
        compute: azureml:m1
        resources: {instance_count: 2}
        """), check=False)
    assert refused.returncode != 0 and "one attached machine" in refused.stderr


def test_an_automl_job_searches_on_an_attached_machine_in_the_curated_environment(
        ws: Workspace, machines) -> None:  # noqa: ANN001
    # The AutoML example, its compute the machine: the trial's code goes over the agent's connection as a
    # snapshot (the machine has no cible but the agent's bundle), FLAML in AzureML-AutoML built there.
    attach(ws, machines, "m1")
    example = REPO / "examples" / "automl"
    (ws.cwd / "data").symlink_to(example / "data")
    spec = ws.cwd / "automl.yml"
    spec.write_text((example / "classification.yml").read_text().replace("azureml:cpu-cluster", "azureml:m1"))
    done = ws.json("job", "create", "-f", spec, "-n", "automl-attached", "--stream")
    assert done["status"] == "Completed", done.get("error")
    job = ws.job("automl-attached")
    assert [t["status"] for t in job["trials"]] == ["Completed", "Completed"] and job["best_trial"]["metric"] >= 0.8
    assert "environment AzureML-AutoML:1" in ws.run_log("automl-attached_0")


# Logs a metric with MLflow's REST API (the host's Python has no mlflow): the tracking URI the job
# is given reaches the server through the SSH tunnel, with the job's own token.
LOG_METRIC = """
import json, os, time, urllib.request
body = json.dumps({"run_id": os.environ["MLFLOW_RUN_ID"], "key": "loss", "value": 0.25,
                   "timestamp": int(time.time() * 1000), "step": 1}).encode()
request = urllib.request.Request(os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/runs/log-metric", body,
                                 {"Content-Type": "application/json",
                                  "Authorization": "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"]})
print("logged", urllib.request.urlopen(request, timeout=30).status, os.environ["MLFLOW_TRACKING_URI"])
"""


def test_environments_and_mlflow_work_on_an_attached_machine(tmp_path: Path, machines) -> None:  # noqa: ANN001
    ws = Workspace(tmp_path / "ws", tracking=True)
    try:
        attach(ws, machines, "m1")
        (ws.cwd / "conda.yml").write_text("name: tiny\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n      - six\n")
        (ws.cwd / "log_metric.py").write_text(LOG_METRIC)
        spec = write_yaml(ws.cwd, "env.yml", """
            code: .
            command: python -c "import six, sys; print('six', six.__version__, sys.prefix)" && python log_metric.py
            environment:
              image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04
              conda_file: conda.yml
            compute: azureml:m1
            """)
        name = ws.json("job", "create", "-f", spec, "-n", "conda-mlflow")["name"]
        done = ws.wait_status(name, timeout=300)
        log = ws.run_log(name)
        assert done["status"] == "Completed", (done, log)
        assert "six 1." in log and "/.cible-agent/nodes/" in log  # built on the machine, in cible's folder there
        assert "logged 200 http://127.0.0.1:" in log  # the tunnel's end on the machine
        assert ws.json("job", "show", "-n", name)["metrics"] == {"loss": 0.25}
    finally:
        ws.stop()
        _machines_off()


def test_a_distributed_job_spans_two_machines_of_a_cluster_that_scales_to_zero(ws: Workspace, machines) -> None:  # noqa: ANN001
    for name in ("m2", "m3"):
        attach(ws, machines, name)
    cluster = write_yaml(ws.cwd, "pair.yml", """
        name: pair
        type: amlcompute
        size: Standard_DS1_v2
        min_instances: 0
        max_instances: 2
        idle_time_before_scale_down: 2
        cible: {provider: ssh, hosts: [m2, m3], overcommit: true}
        """)
    ws.json("compute", "create", "-f", cluster)
    name = job(ws, "ranks", "pair", """
        command: echo "rank=$RANK world=$WORLD_SIZE node_rank=$NODE_RANK master=$MASTER_ADDR"
        distribution: {type: pytorch, process_count_per_instance: 1}
        resources: {instance_count: 2}
        """)
    done = ws.wait_status(name, timeout=120)
    logs = {p.name: p.read_text() for p in (ws.home / "runs" / name / "artifacts" / "user_logs").glob("*.txt")}
    assert done["status"] == "Completed", (done, logs)
    text = "\n".join(logs.values())
    assert "rank=0 world=2 node_rank=0" in text and "rank=1 world=2 node_rank=1" in text, logs
    masters = {line.split("master=")[1] for line in text.splitlines() if "master=" in line}
    first = ws.job(name)["status_history"]  # both ranks name the same MASTER_ADDR: a machine's address
    assert len(masters) == 1 and masters <= set(HOSTS.values()), (masters, first)
    ws.wait_nodes("pair", lambda states: states == [], timeout=60, message="the cluster back to 0 nodes")


def test_a_hung_machine_is_written_off_and_its_job_requeued_on_another(ws: Workspace, machines) -> None:  # noqa: ANN001
    servers = machines[0]
    for name in ("m2", "m3"):
        attach(ws, machines, name)
    cluster = write_yaml(ws.cwd, "solo.yml", """
        name: solo
        type: amlcompute
        size: Standard_DS1_v2
        max_instances: 1
        idle_time_before_scale_down: 60
        cible: {provider: ssh, hosts: [m2, m3], overcommit: true}
        """)
    ws.json("compute", "create", "-f", cluster)
    name = job(ws, "hang", "solo", """
        command: echo "attempt $CIBLE_ATTEMPT on $(hostname -I 2>/dev/null)"; if [ "$CIBLE_ATTEMPT" = 1 ]; then sleep 600; fi
        """)
    [node] = ws.wait_nodes("solo", lambda states: states == ["running"], message="a running node")
    wait_until(lambda: "attempt 1" in ws.run_log(name), 60, message="the first attempt to start")
    first = ws.json("compute", "list-nodes", "-n", "solo")[0]
    machine = next(m for m, address in HOSTS.items() if address == first["private_ip_address"])
    servers[machine].freeze(remote_agent_pid(machines, node["node_id"]))
    try:
        done = ws.wait_status(name, timeout=120)
    finally:
        servers[machine].thaw()
    assert done["status"] == "Completed", done
    reasons = " ".join(h["reason"] or "" for h in done["status_history"])
    assert "stopped heartbeating" in reasons and "attempt 2" in ws.run_log(name)


def test_a_machine_whose_host_key_changed_is_refused_until_replaced(ws: Workspace, machines) -> None:  # noqa: ANN001
    servers = machines[0]
    pinned = attach(ws, machines, "m1")["host_key_fingerprint"]
    servers["m1"].new_host_key()
    name = job(ws, "after-reinstall", "m1", "command: echo still here")
    shown = wait_until(lambda: (c := ws.json("compute", "show", "-n", "m1")).get("provisioning_errors") and c,
                       60, message="the node start to fail")
    message = shown["provisioning_errors"][0]["message"]
    assert "host key" in message and pinned in message and servers["m1"].host_fingerprint in message
    assert ws.job(name)["status"] in ("Queued", "NotStarted")
    ws.cible("compute", "attach", "--name", "m1", "--replace-host-key")
    assert ws.wait_status(name, timeout=120)["status"] == "Completed"
