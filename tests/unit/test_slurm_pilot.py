"""A Slurm job's pilots and the server: what the server answers a pilot node of the job's
SlurmHandle (its one run, its cancel, its stop), the reports it takes from one, and the pilot's side
(Slurm's node addresses put into its plan, its end once its run is done, its share of the node)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import cible.agent.pilot as pilot_module
from cible.agent.http import Response
from cible.agent.pilot import Pilot, main, slurm_shape
from cible.core.errors import ConflictError
from cible.core.models.records import ClusterHandle, SlurmHandle
from cible.node.limits import host_capacity
from cible.server.clusters.agents import AgentService
from cible.server.clusters.hub import AgentHub
from cible.server.clusters.runs import report_path
from cible.server.store.db import Store
from cible.server.store.rows import JobRow
from cible.testing import FrozenClock
from cible.workspace import WorkspacePaths

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
JOB = "khaki_boot"
NODES = ["slurm-job-4242-0", "slurm-job-4242-1"]
HANDLE = SlurmHandle(job_name=JOB, compute="hpc", attempt=2, user="alice", run_dir="/h/runs/khaki_boot.2.abc",
                     master_port=23456, slurm_job_id="4242", nodes=NODES)
PLAN = {"job_name": JOB, "compute": "hpc", "command": "python train.py", "tracking": {"uri": "http://server/mlflow"}}


def plant(store: Store, name: str = JOB, *, status: str = "Running", handle: Any = HANDLE) -> None:
    run = {"plan": {**PLAN, "job_name": name}, **({"handle": handle.model_dump(mode="json")} if handle else {})}
    with store.session() as session:
        session.add(JobRow(name=name, display_name=name, experiment_name="exp", status=status, target="hpc",
                           compute="azureml:hpc", spec={}, warnings=[], run=run, created_at=NOW, updated_at=NOW))


def set_status(store: Store, status: str, name: str = JOB) -> None:
    with store.session() as session:
        session.get(JobRow, name).status = status


@pytest.fixture
def service(store: Store, tmp_path: Path) -> AgentService:
    return AgentService(store, WorkspacePaths(tmp_path / "home"), AgentHub(), FrozenClock(NOW), 30.0,
                        on_first_heartbeat=lambda: None, on_report=lambda: None,
                        run_token=lambda plan: f"run-token-of-{plan['job_name']}")


# -- the server's side ----------------------------------------------------------------------------

def test_each_pilot_node_gets_its_run_with_its_rank_and_an_http_plan(store: Store, service: AgentService):
    plant(store)
    for rank, node in enumerate(NODES):
        reply = service.pilot_wanted(node, JOB, {})
        assert reply["stop"] is False and reply["state"] == "Running" and reply["wait_s"] > 0
        [run] = reply["runs"]
        assert (run["job"], run["attempt"], run["node_rank"], run["cancel"]) == (JOB, 2, rank, False)
        plan = run["plan"]
        assert plan["node_rank"] == rank and plan["attempt"] == 2 and plan["master_port"] == 23456
        assert plan["transfer"] == "http"  # a Slurm node does not see the workspace folder
        assert plan["node_addrs"] == []  # the pilots learn them from Slurm
        assert plan["tracking"]["token"] == f"run-token-of-{JOB}"
        assert plan["command"] == "python train.py"


def test_a_pilot_that_has_its_run_gets_no_plan_again(store: Store, service: AgentService):
    plant(store)
    reply = service.pilot_wanted(NODES[1], JOB, {(JOB, 2): False})
    assert reply["runs"][0]["plan"] is None and reply["runs"][0]["node_rank"] == 1
    assert service.settled(reply, {(JOB, 2): False})


def test_a_cancel_requested_reaches_the_pilots(store: Store, service: AgentService):
    plant(store)
    set_status(store, "CancelRequested")
    reply = service.pilot_wanted(NODES[0], JOB, {(JOB, 2): False})
    assert reply["stop"] is False and reply["runs"][0]["cancel"] is True
    assert not service.settled(reply, {(JOB, 2): False})
    assert service.settled(reply, {(JOB, 2): True})


@pytest.mark.parametrize("status", ["Completed", "Failed", "Canceled"])
def test_a_job_that_ended_stops_its_pilots(store: Store, service: AgentService, status: str):
    plant(store, status=status)
    assert service.pilot_wanted(NODES[0], JOB, {(JOB, 2): False}) == {"stop": True, "runs": [], "state": status}


def test_a_pilot_whose_run_ended_in_a_kept_allocation_is_told_what_the_runner_says(store: Store, tmp_path: Path):
    asked: list[tuple[str, str]] = []

    def pilot_next(handle: SlurmHandle, node: str, successor: tuple[str, int] | None) -> dict[str, Any]:
        asked.append((handle.job_name, node, successor))
        return {"stop": False, "runs": [], "wait_s": 600.0}

    service = AgentService(store, WorkspacePaths(tmp_path / "home"), AgentHub(), FrozenClock(NOW), 30.0,
                           on_first_heartbeat=lambda: None, on_report=lambda: None,
                           run_token=lambda plan: "tok", pilot_next=pilot_next)
    plant(store, handle=HANDLE.model_copy(update={"keeps_allocation": True}))
    # Its run reported done, the job's end not read yet: the runner answers, within a long-poll's wait.
    reply = service.pilot_wanted(NODES[0], JOB, {}, frozenset({(JOB, 2)}))
    assert reply == {"stop": False, "runs": [], "wait_s": service.wait_s, "state": "Running"}
    assert service.settled(reply, {})
    set_status(store, "Completed")
    assert service.pilot_wanted(NODES[1], JOB, {})["state"] == "Completed"
    # The job recorded as taking the allocation after this one is its pilots' next (the store says so).
    plant(store, "next_job", handle=HANDLE.model_copy(update={"job_name": "next_job", "attempt": 1,
                                                              "after_job": JOB, "keeps_allocation": True}))
    plant(store, "elsewhere", handle=HANDLE.model_copy(update={"job_name": "elsewhere", "slurm_job_id": "99"}))
    service.pilot_wanted(NODES[0], JOB, {})
    assert asked == [(JOB, NODES[0], None), (JOB, NODES[1], None), (JOB, NODES[0], ("next_job", 1))]
    # A switch is never held in a long-poll.
    assert not service.settled({"stop": False, "runs": [], "switch": {"job": "next", "token": "t"}}, {})


def test_a_pilot_whose_run_is_done_waits_while_the_job_has_not_ended(store: Store, service: AgentService):
    plant(store)  # an allocation not kept: the pilot stops once the job ended
    reply = service.pilot_wanted(NODES[0], JOB, {}, frozenset({(JOB, 2)}))
    assert reply["runs"] == [] and reply["stop"] is False and service.settled(reply, {})


def test_a_node_not_among_the_jobs_pilots_gets_nothing(store: Store, service: AgentService):
    plant(store)
    assert service.pilot_wanted("slurm-job-4242-2", JOB, {}) is None
    assert service.pilot_wanted("slurm-job-9999-0", JOB, {}) is None
    assert service.pilot_wanted(NODES[0], "no_such_job", {}) is None


def test_a_job_not_on_slurm_gets_no_pilot(store: Store, service: AgentService):
    cluster = ClusterHandle(job_name="on_cluster", compute="c", attempt=1, nodes=list(NODES), master_port=1,
                            node_addrs=["10.0.0.1", "10.0.0.2"])
    plant(store, "on_cluster", handle=cluster)
    plant(store, "not_launched", status="Queued", handle=None)
    assert service.pilot_wanted(NODES[0], "on_cluster", {}) is None
    # A job whose launch is being recorded (sbatch answered, the handle not yet written): its pilot waits.
    assert service.pilot_wanted(NODES[0], "not_launched", {}) == {"stop": False, "runs": [], "state": "Queued",
                                                                  "wait_s": 1.0}


def report(rank: int, attempt: int = 2, *history: str) -> dict[str, Any]:
    return {"attempt": attempt, "node_rank": rank, "history": list(history) or ["Preparing", "Running"]}


def test_a_pilots_report_is_saved(store: Store, service: AgentService, tmp_path: Path):
    plant(store)
    service.report(NODES[1], JOB, report(1))
    saved = report_path(WorkspacePaths(tmp_path / "home"), JOB, 2, 1)
    assert json.loads(saved.read_text())["history"] == ["Preparing", "Running"]


@pytest.mark.parametrize("node, sent", [
    ("slurm-job-4242-1", report(0)),  # the rank of another node
    ("slurm-job-4242-0", report(0, attempt=1)),  # an older attempt
    ("slurm-job-4242-7", report(7)),  # not a node of the job
])
def test_a_report_that_is_not_the_pilots_own_is_refused(store: Store, service: AgentService, tmp_path: Path,
                                                        node: str, sent: dict[str, Any]):
    plant(store)
    with pytest.raises(ConflictError):
        service.report(node, JOB, sent)
    assert not (WorkspacePaths(tmp_path / "home").run_dir(JOB) / "reports").exists()


def test_a_pilot_sends_no_file_once_the_job_ended(store: Store, service: AgentService):
    plant(store, status="Completed")
    with pytest.raises(ConflictError, match="has ended"):
        service.placed_plan(NODES[0], JOB, 2, writing=True)
    assert service.placed_plan(NODES[0], JOB, 2)["job_name"] == JOB


# -- the pilot's side -----------------------------------------------------------------------------

class _Limits:
    def usage(self) -> dict:
        return {"cpu_percent": 1.0}


class _Server:
    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, Any]] = []

    def request(self, method: str, url: str, *, json: Any = None, headers: Any = None, **_: Any) -> Response:
        self.sent.append((url, json, headers))
        return Response(200, __import__("json").dumps(self.answers.pop(0)).encode())

    def close(self) -> None:
        pass


def pilot(tmp_path: Path, answers: list[dict[str, Any]], addrs: list[str], **kwargs: Any) -> tuple[Pilot, _Server]:
    made = Pilot(job=JOB, node_addrs=addrs, node_id=NODES[1], root=tmp_path, url="http://server", token="pilot-tok",
                 limits=_Limits(), **kwargs)
    made.http.close()
    made.http = server = _Server(answers)
    return made, server


def run_reply(plan: dict[str, Any] | None) -> dict[str, Any]:
    return {"stop": False, "state": "Running", "wait_s": 10,
            "runs": [{"job": JOB, "attempt": 2, "node_rank": 1, "cancel": False, "plan": plan}]}


def test_the_pilot_puts_slurms_node_addresses_into_its_plan(tmp_path: Path):
    made, server = pilot(tmp_path, [run_reply({"node_rank": 1, "node_addrs": [], "master_port": 23456})],
                         ["10.0.0.5", "10.0.0.6"])
    reply = made._heartbeat(0.0)
    assert reply["runs"][0]["plan"] == {"node_rank": 1, "node_addrs": ["10.0.0.5", "10.0.0.6"], "master_port": 23456}
    url, body, headers = server.sent[0]
    assert url == f"http://server/api/v1/agent/nodes/{NODES[1]}/heartbeat"
    assert headers == {"Authorization": "Bearer pilot-tok"} and body["runs"] == []


def test_a_reply_without_a_plan_is_left_as_it_is(tmp_path: Path):
    made, _ = pilot(tmp_path, [run_reply(None)], ["10.0.0.5"])
    assert made._heartbeat(0.0)["runs"][0]["plan"] is None


def test_a_pilot_without_slurms_addresses_keeps_the_plans(tmp_path: Path):
    made, _ = pilot(tmp_path, [run_reply({"node_addrs": ["x"]})], [])
    assert made._heartbeat(0.0)["runs"][0]["plan"] == {"node_addrs": ["x"]}


def test_a_pilot_whose_run_is_done_stops_without_asking(tmp_path: Path):
    made, server = pilot(tmp_path, [], ["10.0.0.5"])
    made.done.add((JOB, 2))
    assert made._heartbeat(10.0) == {"stop": True, "runs": []}
    assert server.sent == []


def test_a_pilot_kept_warm_says_its_run_is_done_and_waits_for_the_servers_word(tmp_path: Path):
    waiting = {"stop": False, "runs": [], "state": "Completed", "wait_s": 10}
    made, server = pilot(tmp_path, [waiting], [], keep_s=60)
    made.done.add((JOB, 2))
    assert made._heartbeat(10.0) == waiting
    _, body, _ = server.sent[0]
    assert body["runs"] == [] and body["done"] == [{"job": JOB, "attempt": 2}]


@pytest.mark.parametrize("end, stays", [("Completed", True), ("Failed", False), ("Canceled", False)])
def test_only_a_completed_run_keeps_its_pilot_in_the_allocation(tmp_path: Path, end: str, stays: bool):
    from cible.agent.agent import Run

    made, server = pilot(tmp_path, [{"accepted": True}, {"stop": False, "runs": [], "state": end, "wait_s": 10}], [],
                         keep_s=60)
    report = {"attempt": 2, "node_rank": 1, "history": ["Preparing", "Running", end], "ended": True}
    assert made._send_report(Run(JOB, 2, 1, None, 0), report)
    made.done.add((JOB, 2))
    said = made._heartbeat(10.0)
    assert (said["stop"] is False) is stays and len(server.sent) == (2 if stays else 1)


def test_a_warm_pilot_switches_to_the_next_job_and_its_token(tmp_path: Path):
    switch = {"stop": False, "runs": [], "state": "Completed", "wait_s": 0.0,
              "switch": {"job": "next_job", "token": "next-tok"}}
    made, server = pilot(tmp_path, [switch, run_reply(None)], [], keep_s=60)
    made.done.add((JOB, 2))
    made._heartbeat(10.0)
    assert (made.job, made.token, made.warm) == ("next_job", "next-tok", False)
    made._heartbeat(0.0)  # as the next job's pilot: its token, and no run of its own done
    _, body, headers = server.sent[1]
    assert headers == {"Authorization": "Bearer next-tok"} and body["done"] == []


def test_a_warm_pilot_ends_on_its_own_a_while_after_the_servers_last_word(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    """Should the server be gone, the pilot does not hold the allocation: each "wait" of the server's
    puts its end that long (and a margin) ahead."""
    made, server = pilot(tmp_path, [{"stop": False, "runs": [], "state": "Completed", "wait_s": 10}], [], keep_s=5)
    made.done.add((JOB, 2))
    made._heartbeat(10.0)
    now = pilot_module.time.monotonic()
    monkeypatch.setattr(pilot_module.time, "monotonic", lambda: now + 10 + pilot_module.KEEP_MARGIN_S + 1)
    assert made._heartbeat(10.0) == {"stop": True, "runs": []} and len(server.sent) == 1


def test_a_pilot_with_no_run_done_yet_asks_the_server(tmp_path: Path):
    made, server = pilot(tmp_path, [{"stop": False, "runs": [], "state": "Running", "wait_s": 10}], [])
    assert made._heartbeat(0.0)["stop"] is False and len(server.sent) == 1


def test_main_passes_slurms_node_addresses_to_the_pilot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    made: dict[str, Any] = {}

    class Started:
        def __init__(self, **kwargs: Any) -> None:
            made.update(kwargs)

        def serve(self) -> int:
            return 0

    monkeypatch.setattr(pilot_module, "Pilot", Started)
    monkeypatch.setenv("CIBLE_NODE_ADDRS", "10.0.0.5,10.0.0.6")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "2048")
    token_file = tmp_path / "token"
    token_file.write_text("cible-pilot.abc.2.mac\n")
    argv = ["--node-id", NODES[0], "--job", JOB, "--token-file", str(token_file), "--url", "http://server/",
            "--root", str(tmp_path / "node-0")]
    assert main(argv) == 0
    assert made["node_addrs"] == ["10.0.0.5", "10.0.0.6"] and made["job"] == JOB
    assert made["token"] == "cible-pilot.abc.2.mac" and made["url"] == "http://server"
    assert made["node_id"] == NODES[0] and (tmp_path / "node-0").is_dir()


def test_main_without_its_token_file_ends_at_once(tmp_path: Path):
    argv = ["--node-id", NODES[0], "--job", JOB, "--token-file", str(tmp_path / "missing"), "--url", "http://s",
            "--root", str(tmp_path / "node-0")]
    assert main(argv) == 2


def test_the_pilots_share_of_the_node_is_slurms(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "8192")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    shape = slurm_shape()
    assert (shape.vcpus, shape.memory_gb, shape.gpus) == (4, 8.0, 2)


def test_without_slurms_numbers_the_pilot_takes_the_node(monkeypatch: pytest.MonkeyPatch):
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", "SLURM_MEM_PER_NODE", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    shape = slurm_shape()
    assert (shape.vcpus, shape.gpus) == (1, 0) and shape.memory_gb == host_capacity().memory_gb
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "8")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "0")  # no memory asked: the node's
    shape = slurm_shape()
    assert shape.vcpus == 8 and shape.memory_gb == host_capacity().memory_gb


def test_a_pilot_token_reaches_only_its_jobs_current_submission_and_attempt(store: Store, service: AgentService):
    """check_pilot (every agent route, for a pilot token): the salt is `<submission>-<attempt>`."""
    from cible.core.errors import NotFoundError

    plant(store)  # PLAN has no token_salt: the submission is ""
    service.check_pilot(NODES[0], JOB, "-2")
    for node, salt in ((NODES[0], "-1"),  # an earlier attempt's token
                       (NODES[0], "old-2"),  # a token of another submission of that name
                       ("slurm-job-9999-0", "-2")):  # a node that is not the attempt's
        with pytest.raises(NotFoundError):
            service.check_pilot(node, JOB, salt)
    with pytest.raises(NotFoundError):
        service.check_pilot(NODES[0], "no_such_job", "-2")
    # sbatch answered, the launch not yet recorded: the submission is still checked.
    plant(store, "being_recorded", status="Queued", handle=None)
    service.check_pilot(NODES[0], "being_recorded", "-1")
    with pytest.raises(NotFoundError):
        service.check_pilot(NODES[0], "being_recorded", "old-1")
