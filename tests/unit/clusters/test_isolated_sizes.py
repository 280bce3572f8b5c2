"""Isolated sizes serve one user at a time: on a cluster of an isolated size, another user's job waits
while a user's jobs run there, saying whose job it waits for, and no node is started for it; on this
machine (the `local` provider's nodes share it) a job of another user waits while an isolated size's
node runs a job, and an isolated size's job waits while others' jobs run here. A user's own jobs are
never held back. The pure placement, then the real cluster reconciler on a real store (fake provider)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import update
from test_cluster_isolation import Bench, bench  # noqa: F401 - the bench fixture

from cible.core.planning.clusters import ClusterConfig, NodeState, NodeView, QueuedJob, decide_cluster
from cible.core.planning.scheduling import Holder, place_fifo
from cible.server.store.rows import JobRow

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
ISOLATED = "Standard_F72s_v2"  # the catalog's isolated: a whole host


def queued(name: str, user: str | None, minute: int = 0) -> QueuedJob:
    return QueuedJob(name=name, submitted_at=NOW.replace(minute=minute), user=user)


def test_another_users_job_waits_for_the_holders_and_a_users_own_do_not() -> None:
    config = ClusterConfig(name="iso", max_instances=3)
    jobs = [queued("a2", "alice", 1), queued("b1", "bob", 2), queued("a3", "alice", 3)]
    placed = place_fifo(config, jobs, ["n1", "n2", "n3"], holders=[Holder("alice", "a1")])
    assert placed.assign == [("a2", ("n1",))]  # FIFO: bob's head waits, alice's behind it too
    assert [j.name for j in placed.waiting] == ["b1", "a3"]
    assert placed.isolated == ("isolated size: its hardware serves one user at a time, and job a1 of user 'alice' "
                               "runs on it")
    assert place_fifo(config, jobs, ["n1", "n2", "n3"]).isolated is None  # no holders: a shared size
    first = place_fifo(config, [queued("w", None), queued("b", "bob", 1)], ["n1", "n2"], holders=[Holder("x", "j")])
    assert "job j of user 'x'" in first.isolated and not first.assign


def test_a_job_placed_in_the_same_pass_holds_the_hardware_for_the_jobs_behind_it() -> None:
    config = ClusterConfig(name="iso", max_instances=3)
    jobs = [queued("a1", "alice"), queued("b1", "bob", 1)]
    assert len(place_fifo(config, jobs, ["n1", "n2"]).assign) == 2  # nothing to keep apart: both start
    placed = place_fifo(config, jobs, ["n1", "n2"], holders=[])  # isolated, free: alice's first holds it
    assert placed.assign == [("a1", ("n1",))] and "job a1 of user 'alice'" in placed.isolated
    nodes = [NodeView(node_id=n, state=NodeState.IDLE, created_at=NOW, idle_since=NOW) for n in ("n1", "n2")]
    plan = decide_cluster(config, nodes, jobs, [], NOW, holders=[Holder("alice", "a0")])
    assert plan.assign == [("a1", ("n1",))] and plan.queue_jobs[0].name == "b1"
    assert plan.launch == 0 and "job a0 of user 'alice'" in plan.waiting["b1"]


def owned(bench: Bench, job: str, user: str) -> None:  # noqa: F811
    with bench.store.session() as session:
        session.execute(update(JobRow).where(JobRow.name == job).values(created_by=user))


def test_the_reconciler_keeps_an_isolated_size_and_this_machine_to_one_user_at_a_time(bench: Bench) -> None:  # noqa: F811
    bench.plant("iso", size=ISOLATED, cible={"provider": "local", "overcommit": True})
    bench.plant("cpu")
    for node_id, compute in (("iso-1", "iso"), ("iso-2", "iso"), ("cpu-1", "cpu")):
        bench.node(node_id, compute)
    for job, compute, user in (("a1", "iso", "alice"), ("b1", "iso", "bob")):
        bench.queue(job, compute)
        owned(bench, job, user)
    bench.reconciler.reconcile_once()
    assert bench.job_status("a1") != "Queued" and bench.job_status("b1") == "Queued"
    assert "job a1 of user 'alice'" in bench.observed("iso").queue.notes[0]
    assert bench.nodes("iso") == {"iso-1": "running", "iso-2": "idle"}  # an idle node, and none started

    bench.queue("b2", "cpu")  # elsewhere, on the same machine
    owned(bench, "b2", "bob")
    bench.reconciler.reconcile_once()
    assert bench.job_status("b2") == "Queued"
    assert "job a1 of user 'alice'" in bench.observed("cpu").queue.notes[0]

    with bench.store.session() as session:
        session.execute(update(JobRow).where(JobRow.name == "a1").values(status="Completed"))
    bench.reconciler.reconcile_once()
    assert bench.job_status("b1") != "Queued" and bench.job_status("b2") != "Queued"  # bob's own, both

    bench.queue("a2", "iso")  # alice's again, while bob's run on this machine
    owned(bench, "a2", "alice")
    bench.reconciler.reconcile_once()
    assert bench.job_status("a2") == "Queued"
    assert "of user 'bob'" in bench.observed("iso").queue.notes[0]
