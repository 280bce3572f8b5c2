"""QOS limits on a Slurm cluster with accounting, end to end: the CLI against a real server, and a
real Slurm whose slurmctld enforces QOS through a slurmdbd and a MariaDB of its own
(cible.testing.slurm_accounting). Issue 19: sbatch refusing a job over its QOS gives a clear reason
on the job, never a hang; a job Slurm holds back for its QOS says so, and cancels.

The compute `hpc` submits with QOS `one-cpu` (the compute's `qos:`): one CPU a job, and
DenyOnLimit, so sbatch refuses a job over it. `one-cpu-queued` has the same limit without
DenyOnLimit: Slurm takes such a job and keeps it pending (a job asks for it with
`resources.properties.slurm.qos`). The nodes have one CPU each: two nodes are two CPUs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_support import Workspace, wait_until, write_yaml

from cible.backends.slurm import commands
from cible.testing.slurm import needs_slurm
from cible.testing.slurm_accounting import (
    ACCOUNT,
    AccountingSlurmTestCluster,
    accounting_missing,
    running_accounting_cluster,
)

DENYING = "one-cpu"  # MaxTRESPerJob=cpu=1, Flags=DenyOnLimit: the compute's QOS
HOLDING = "one-cpu-queued"  # MaxTRESPerJob=cpu=1: Slurm queues a job over it


@pytest.fixture(scope="module", autouse=True)
def _needs_accounting() -> None:
    needs_slurm(accounting_missing)


@pytest.fixture(scope="module")
def cluster() -> Iterator[AccountingSlurmTestCluster]:
    with running_accounting_cluster() as slurm:
        slurm.add_qos(DENYING, "MaxTRESPerJob=cpu=1", "Flags=DenyOnLimit")
        slurm.add_qos(HOLDING, "MaxTRESPerJob=cpu=1")
        yield slurm


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, cluster: AccountingSlurmTestCluster) -> Iterator[Workspace]:
    """One server for the module: its tests leave it as they found it (no job left in Slurm)."""
    workspace = Workspace(tmp_path_factory.mktemp("ws"))
    spec = write_yaml(workspace.cwd, "hpc.yml", f"""
        name: hpc
        type: slurm
        qos: {DENYING}
        cible: {{environment: {{SLURM_CONF: "{cluster.slurm_conf}"}}}}
        """)
    workspace.json("compute", "attach", "-f", spec)
    yield workspace
    workspace.stop()


@pytest.fixture(autouse=True)
def _no_job_left(cluster: AccountingSlurmTestCluster) -> Iterator[None]:
    yield
    cluster.run(["scancel", "--user", "root"])


def job(ws: Workspace, name: str, body: str) -> str:
    spec = write_yaml(ws.cwd, f"{name}.yml", f"""
        compute: azureml:hpc
        {body}
        """)
    return ws.json("job", "create", "-f", spec, "-n", name)["name"]


def slurm_jobs(cluster: AccountingSlurmTestCluster, name: str, *states: str) -> list[commands.SlurmJob]:
    """The Slurm jobs of cible job `name` (Slurm names them cible-<name>) that squeue lists in `states`
    (default: every state it still remembers)."""
    done = cluster.run(["squeue", "-h", "-t", ",".join(states) or "all", "-n", f"cible-{name}",
                        "-o", commands.SQUEUE_FORMAT])
    assert done.returncode == 0, done.stderr
    return list(commands.parse_squeue(done.stdout).values())


def accounted(cluster: AccountingSlurmTestCluster, name: str, *states: str) -> dict[str, str] | None:
    """The job's row in the accounting database (`sacct`), once in one of `states` (default: any),
    else None: slurmctld sends its records to slurmdbd a moment after each change."""
    done = cluster.run(["sacct", "-X", "-n", "-P", "--starttime=2020-01-01", "--name", f"cible-{name}",
                        "-o", "JobID,State,QOS,Account,User"])
    assert done.returncode == 0, done.stderr
    rows = [dict(zip(("job_id", "state", "qos", "account", "user"), line.split("|")))
            for line in done.stdout.splitlines() if line.strip()]
    return next((row for row in rows if not states or row["state"].split()[0] in states), None)


def test_a_job_over_a_deny_on_limit_qos_fails_at_once_with_slurms_words(
        ws: Workspace, cluster: AccountingSlurmTestCluster) -> None:
    name = job(ws, "two-cpus-denied", """
        command: echo never
        resources: {instance_count: 2}
        """)
    done = ws.wait_status(name, timeout=30)
    assert done["status"] == "Failed" and done["error"]["code"] == "SlurmSubmitRefused", done
    message = done["error"]["message"]
    # sbatch's own sentence and the limit it names: "Job violates accounting/QOS policy (job submit
    # limit, user's size and/or time limits) (QOSMaxCpuPerJobLimit)".
    assert "sbatch refused the job" in message and "Job violates accounting/QOS policy" in message, message
    assert "QOSMaxCpuPerJobLimit" in message, message
    assert not slurm_jobs(cluster, name), "a refused job is never a Slurm job"


def test_a_job_over_its_qos_without_deny_on_limit_waits_saying_why_and_cancels(
        ws: Workspace, cluster: AccountingSlurmTestCluster) -> None:
    held = job(ws, "two-cpus-held", f"""
        command: echo never
        resources: {{instance_count: 2, properties: {{slurm: {{qos: {HOLDING}}}}}}}
        """)

    def says_why() -> dict | None:
        shown = ws.job(held)
        return shown if "QOSMaxCpuPerJobLimit" in (shown.get("queue_reason") or "") else None

    shown = wait_until(says_why, 30, interval=0.2, message="the job to show Slurm's QOS reason")
    assert shown["status"] == "Queued" and shown["slurm"]["job_id"], shown
    [slurm_job] = slurm_jobs(cluster, held)
    assert (slurm_job.state, slurm_job.reason) == ("PENDING", "QOSMaxCpuPerJobLimit"), slurm_job
    printed = ws.cible("job", "show", "-n", held).stdout  # what a person reads
    assert "QOSMaxCpuPerJobLimit" in printed, printed
    # Held for its QOS, not for want of nodes: a later job within the same QOS runs past it.
    later = job(ws, "one-cpu-runs", f"""
        command: echo fits
        resources: {{properties: {{slurm: {{qos: {HOLDING}}}}}}}
        """)
    assert ws.wait_status(later, timeout=60)["status"] == "Completed"
    shown = ws.job(held)
    assert shown["status"] == "Queued" and "QOSMaxCpuPerJobLimit" in shown["queue_reason"], shown
    # Canceled while Slurm holds it: scancel, and Slurm no longer queues it.
    ws.cible("job", "cancel", "-n", held)
    assert ws.wait_status(held, timeout=30)["status"] == "Canceled"
    assert not slurm_jobs(cluster, held, "pending", "running"), slurm_jobs(cluster, held)
    wait_until(lambda: accounted(cluster, held, "CANCELLED"), 30, interval=0.2,
               message="sacct to show the held job cancelled")


def test_a_job_within_its_qos_completes_and_is_accounted(ws: Workspace, cluster: AccountingSlurmTestCluster) -> None:
    name = job(ws, "within-qos", "command: echo within the QOS")
    done = ws.wait_status(name, timeout=60)
    assert done["status"] == "Completed", (done, ws.run_log(name))
    assert "within the QOS" in ws.run_log(name)
    # Its row in the database: RUNNING or COMPLETED (its pilots may stay a while in the allocation,
    # kept warm for a next job: cible.backends.slurm.allocations).
    row = wait_until(lambda: accounted(cluster, name), 30, interval=0.2, message="sacct to show the job")
    # The compute's QOS, the user's default account: what the database holds of it.
    assert (row["qos"], row["account"], row["user"]) == (DENYING, ACCOUNT, "root"), row
    assert row["job_id"] == done["slurm"]["job_id"], (row, done["slurm"])
