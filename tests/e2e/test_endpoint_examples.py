"""The online endpoint example (examples/endpoints/online: Azure's sample layout, endpoint + blue and
green deployments of two models) driven with the `cible` CLI against a real server, as a user of
`az ml online-endpoint` would: the blue deployment with all the traffic answers the model's
predictions; green answers when pinned by header and shares a 50/50 split; no key is a 401; a
deployment whose init() raises fails, with its traceback in `get-logs`; `--local` serves the same
files in place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from e2e_support import REPO, Workspace, wait_until

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples" / "endpoints" / "online"
BLUE = [6.15, 13.8]  # model-1's answer to sample-request.json
GREEN = [55.0, 55.0]  # model-2's


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example (a test edits files of it)."""
    root = tmp_path_factory.mktemp("example") / "online"
    shutil.copytree(EXAMPLE, root)
    return root


def invoke(workspace: Workspace, example: Path, *args: str) -> list[float]:
    proc = workspace.cible("online-endpoint", "invoke", "-n", "my-endpoint", "--request-file",
                           example / "sample-request.json", *args)
    return json.loads(proc.stdout)


def test_blue_with_all_the_traffic_answers_the_models_predictions(workspace: Workspace, example: Path):
    workspace.cible("online-endpoint", "create", "-f", example / "endpoint.yml")
    created = workspace.json("online-deployment", "create", "-f", example / "blue-deployment.yml", "--all-traffic")
    assert created["provisioning_state"] == "Succeeded"
    assert [r["state"] for r in created["replicas"]] == ["Ready"]
    assert invoke(workspace, example) == BLUE


def test_green_pinned_by_header_then_a_50_50_split_answers_from_both(workspace: Workspace, example: Path):
    workspace.cible("online-deployment", "create", "-f", example / "green-deployment.yml")
    assert invoke(workspace, example, "--deployment-name", "green") == GREEN
    workspace.cible("online-endpoint", "update", "-n", "my-endpoint", "--traffic", "blue=50 green=50")
    endpoint = workspace.json("online-endpoint", "show", "-n", "my-endpoint")
    assert endpoint["traffic"] == {"blue": 50, "green": 50}
    key = workspace.json("online-endpoint", "get-credentials", "-n", "my-endpoint")["primaryKey"]
    body = (example / "sample-request.json").read_bytes()
    with httpx.Client(headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}) as client:
        answers = {json.dumps(client.post(endpoint["scoring_uri"], content=body).json()) for _ in range(40)}
    assert answers == {json.dumps(BLUE), json.dumps(GREEN)}


def test_no_key_is_refused(workspace: Workspace, example: Path):
    endpoint = workspace.json("online-endpoint", "show", "-n", "my-endpoint")
    answer = httpx.post(endpoint["scoring_uri"], content=(example / "sample-request.json").read_bytes())
    assert answer.status_code == 401


def test_a_broken_init_fails_the_deployment_and_get_logs_has_its_traceback(workspace: Workspace, example: Path):
    broken = example / "model-1" / "broken"
    shutil.copytree(example / "model-1" / "onlinescoring", broken)
    score = broken / "score.py"
    score.write_text(score.read_text().replace('    global model\n', '    global model\n    raise ValueError("no model here")\n'))
    spec = (example / "blue-deployment.yml").read_text().replace("name: blue", "name: broken").replace(
        "model-1/onlinescoring/", "model-1/broken/")
    (example / "broken-deployment.yml").write_text(spec)
    proc = workspace.cible("online-deployment", "create", "-f", example / "broken-deployment.yml", check=False)
    assert proc.returncode == 1
    assert "init() raised" in proc.stderr and "get-logs" in proc.stderr
    # The replica's log reaches the server in the agent's next shipment, which may come a moment after
    # the failure is known (seen in CI: only the log's first line was there yet).
    def traceback_logged() -> str | None:
        out = workspace.cible("online-deployment", "get-logs", "-n", "broken", "-e", "my-endpoint", "--lines", "50")
        return out.stdout if "ValueError: no model here" in out.stdout else None

    logs = wait_until(traceback_logged, timeout=60, interval=1, message="the broken replica's traceback in get-logs")
    assert "Traceback" in logs and "ValueError: no model here" in logs
    assert invoke(workspace, example, "--deployment-name", "blue") == BLUE  # the others serve on


def test_local_serves_the_same_files_without_credentials(workspace: Workspace, example: Path):
    workspace.cible("online-endpoint", "create", "-f", example / "endpoint.yml", "--local")
    created = workspace.json("online-deployment", "create", "-f", example / "blue-deployment.yml", "--local")
    assert created["provisioning_state"] == "Succeeded"
    assert invoke(workspace, example, "--local") == BLUE
    workspace.cible("online-endpoint", "delete", "-n", "my-endpoint", "--local", "--yes")
    assert invoke(workspace, example) in (BLUE, GREEN)  # the workspace endpoint of the same name is apart


def test_a_server_restart_keeps_the_endpoint_its_keys_and_its_scoring_uri(workspace: Workspace, example: Path):
    before = workspace.json("online-endpoint", "show", "-n", "my-endpoint")
    key = workspace.json("online-endpoint", "get-credentials", "-n", "my-endpoint")["primaryKey"]
    workspace.cible("server", "stop")  # the replicas' nodes go on without it
    assert invoke(workspace, example, "--deployment-name", "blue") == BLUE  # the CLI starts it again
    after = workspace.json("online-endpoint", "show", "-n", "my-endpoint")
    assert after["scoring_uri"] == before["scoring_uri"] and after["traffic"] == before["traffic"]
    assert workspace.json("online-endpoint", "get-credentials", "-n", "my-endpoint")["primaryKey"] == key
