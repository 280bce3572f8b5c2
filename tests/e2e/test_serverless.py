"""Serverless compute, quotas and cost end to end: jobs that name no compute get nodes of their
own (real `cible agent` processes) that go when they end; quotas hold nodes back with the
reason shown; costs add up to node lifetimes × the size's price. With CIBLE_WARM_NODES, a job's node
is an agent started ahead of need, and the pool's time is billed."""

from __future__ import annotations

import psutil
import pytest
from e2e_support import Workspace, wait_until, write_yaml

SMALL = "Standard_DS1_v2"  # 1 vCPU, standardDSv2Family, 0.057 USD/h in the catalog


@pytest.fixture
def ws(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    del workspace.env["CIBLE_DEFAULT_COMPUTE"]  # the installation default: serverless
    yield workspace
    workspace.stop()


def poll(get, holds, timeout: float, message: str):  # noqa: ANN001, ANN201
    """Call get() until holds(value); returns the value."""
    def check():  # noqa: ANN202
        value = get()
        return value if holds(value) else None

    return wait_until(check, timeout, interval=0.2, message=message)


def submit(ws: Workspace, name: str, command: str, extra: str = "") -> dict:
    spec = write_yaml(ws.cwd, f"{name}.yml", f"""
        command: {command}
        environment: azureml:AzureML-sklearn-1.5@latest
        {extra}
        """)
    return ws.json("job", "create", "-f", spec, "-n", name)


def gated(ws: Workspace, name: str) -> str:
    gate = ws.cwd / f"go-{name}"
    return f"'echo on $AZUREML_COMPUTE; while [ ! -e {gate} ]; do sleep 0.05; done'"


def test_a_job_without_compute_runs_on_a_node_made_for_it_that_goes_after_it(ws: Workspace) -> None:
    job = submit(ws, "plain", gated(ws, "plain"), extra=f"resources: {{instance_type: {SMALL}}}")
    assert job["compute"] == "serverless" and job["serverless"]["size"] == SMALL
    assert any("runs on serverless compute" in w for w in job["warnings"])
    running = ws.wait_status("plain", "Running")
    node = running["nodes"][0]
    assert node.endswith("_d")  # dedicated
    assert "serverless" not in " ".join(c["name"] for c in ws.json("compute", "list"))
    (ws.cwd / "go-plain").touch()
    done = ws.wait_status("plain")
    assert done["status"] == "Completed" and "on serverless:plain" in ws.run_log("plain")
    # live_nodes drops as the node starts leaving; its folder goes once its agent has stopped
    gone = poll(lambda: ws.job("plain"), lambda j: j["serverless"]["live_nodes"] == 0
                and not (ws.home / "nodes" / node).exists(), 30, "the job's node gone, its folder removed")
    assert gone["cost"]["estimate"]["per_hour"] == pytest.approx(0.057)
    assert gone["cost"]["actual"] > 0


def test_spot_tier_and_two_nodes(ws: Workspace) -> None:
    submit(ws, "spot2", "'echo on $AZUREML_COMPUTE'", extra=f"""resources: {{instance_type: {SMALL}, instance_count: 2}}
        queue_settings: {{job_tier: spot}}""")
    done = ws.wait_status("spot2")
    assert done["status"] == "Completed", done
    assert len(done["nodes"]) == 2 and all(n.endswith("_p") for n in done["nodes"])  # low priority
    assert done["serverless"]["tier"] == "low_priority"


def test_a_job_over_quota_waits_and_says_so_and_costs_add_up(ws: Workspace) -> None:
    ws.cible("quota", "set", "--scope", "standardDSv2Family", "--vcpus", "1")
    first = submit(ws, "first", gated(ws, "first"), extra=f"resources: {{instance_type: {SMALL}}}")
    ws.wait_status(first["name"], "Running")
    second = submit(ws, "second", "'echo second'", extra=f"resources: {{instance_type: {SMALL}}}")
    assert second["status"] == "Queued"
    waiting = poll(lambda: ws.job("second"), lambda j: "quota" in (j.get("queue_reason") or ""), 15,
                   "the quota named in the wait")
    assert "standardDSv2Family dedicated vCPUs: 1 of 1 in use" in waiting["queue_reason"]
    usage = {r["name"]["value"]: r for r in ws.json("compute", "list-usage")}
    assert usage["standardDSv2Family"]["currentValue"] == 1 and usage["standardDSv2Family"]["limit"] == 1

    request = ws.cible("quota", "request", "--scope", "standardDSv2Family", "--vcpus", "2", "--reason", "two at once")
    assert "pending approval" in request.stdout
    ws.cible("quota", "approve", "1")
    assert ws.wait_status("second")["status"] == "Completed"  # started while the first still runs
    assert ws.job("first")["status"] == "Running"
    (ws.cwd / "go-first").touch()
    ws.wait_status("first")

    report = poll(lambda: ws.json("cost", "report", "--by", "compute"),
                  lambda r: len(r["lines"]) == 2 and all(line["node_hours"] > 0 for line in r["lines"]), 30,
                  "two serverless pools costed")
    for line in report["lines"]:  # node-hours × the size's price, per pool
        assert line["cost"] == pytest.approx(line["node_hours"] * 0.057, rel=1e-3, abs=1e-6)
    by_job = {line["key"]: line["cost"] for line in ws.json("cost", "report", "--by", "job")["lines"]}
    assert set(by_job) == {"first", "second"} and by_job["first"] > by_job["second"]
    assert sum(by_job.values()) == pytest.approx(report["total"], abs=1e-5)
    by_user = ws.json("cost", "report", "--by", "user")
    assert by_user["lines"][0]["cost"] == pytest.approx(report["total"], abs=1e-5)


def warm_agents(ws: Workspace) -> list[psutil.Process]:
    """The workspace's warm agents still waiting (they work in the nodes' .warm folder until told)."""
    folder = str(ws.home / "nodes" / ".warm")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if (proc.info["cmdline"] or [])[-1:] == ["--warm"] and proc.cwd() == folder:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def test_with_a_warm_pool_a_job_s_node_is_a_warm_agent_and_the_pool_is_billed(ws: Workspace) -> None:
    ws.env["CIBLE_WARM_NODES"] = "1"
    ws.cible("server", "start")
    (waiting,) = wait_until(lambda: warm_agents(ws), 30, interval=0.1, message="a warm agent")
    submit(ws, "warm", gated(ws, "warm"), extra=f"resources: {{instance_type: {SMALL}}}")
    node = ws.wait_status("warm", "Running")["nodes"][0]
    assert ws.agent_pid(node) == waiting.pid  # the warm agent became the job's node
    wait_until(lambda: [p for p in warm_agents(ws) if p.pid != waiting.pid], 30, interval=0.1,
               message="the pool filled again")
    (ws.cwd / "go-warm").touch()
    assert ws.wait_status("warm")["status"] == "Completed" and "on serverless:warm" in ws.run_log("warm")
    lines = {line["key"]: line for line in ws.json("cost", "report", "--by", "compute")["lines"]}
    assert set(lines) == {"serverless:warm", "(warm pool)"}
    assert lines["(warm pool)"]["cost"] > 0 and lines["(warm pool)"]["idle"] == lines["(warm pool)"]["cost"]
