"""cible's sbatch scripts and readers of Slurm's output against a real Slurm (slurmctld and three
slurmd nodes on this machine, cible.testing.slurm): jobs submitted as a non-root user, as cible
submits them over SSH, run where and as they should, and what squeue, scontrol and sacct print
reads back as the states cible maps.

There is no accounting database (no slurmdbd): `sacct` answers that accounting is disabled, and
job state is read from squeue and scontrol while slurmctld remembers the job (MinJobAge), or from
the job completion file (`sacct -c`)."""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cible.backends.slurm import commands
from cible.backends.slurm.commands import SlurmJob
from cible.backends.slurm.script import render
from cible.core.lifecycle.jobs import JobStatus
from cible.testing.slurm import JOB_USER, SlurmTestCluster, needs_slurm, running_cluster


@pytest.fixture(scope="module", autouse=True)
def _needs_slurm() -> None:
    needs_slurm()


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmTestCluster]:
    with running_cluster() as slurm:
        yield slurm


@pytest.fixture
def workdir(cluster: SlurmTestCluster) -> Path:
    return cluster.workdir(JOB_USER)


def submit(cluster: SlurmTestCluster, workdir: Path, name: str, script: str, **env: str) -> str:
    """sbatch as JOB_USER (the script is the user's file, as cible would copy it over SFTP): the job id."""
    path = workdir / f"{name}.sbatch"
    path.write_text(script)
    user = pwd.getpwnam(JOB_USER)
    os.chown(path, user.pw_uid, user.pw_gid)
    # From a clean environment, as cible submits (commands.submit_command): the job gets only that.
    done = cluster.run(["sh", "-c", commands.submit_command(str(path), cluster.env({}))], user=JOB_USER,
                       env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return commands.parse_sbatch(done.stdout).job_id


def refused(cluster: SlurmTestCluster, workdir: Path, script: str) -> str | None:
    path = workdir / "refused.sbatch"
    path.write_text(script)
    os.chmod(path, 0o644)
    done = cluster.run(commands.submit_argv(str(path)), user=JOB_USER)
    assert done.returncode != 0 and not done.stdout.strip(), done
    return commands.submit_refusal(done.stderr)


def squeue(cluster: SlurmTestCluster, job_id: str) -> SlurmJob | None:
    done = cluster.run(commands.squeue_argv([job_id]), user=JOB_USER)
    assert done.returncode == 0, done.stderr
    return commands.parse_squeue(done.stdout).get(job_id)


def wait_for(cluster: SlurmTestCluster, job_id: str, until: Callable[[SlurmJob], bool], timeout: float = 30) -> SlurmJob:
    deadline = time.monotonic() + timeout
    while True:
        job = squeue(cluster, job_id)
        if job is not None and until(job):
            return job
        assert time.monotonic() < deadline, f"Slurm job {job_id}: {job}"
        time.sleep(0.1)  # the controller schedules about once a second


def ended(job: SlurmJob) -> bool:
    return job.state in commands.ENDED_STATES


def test_the_cluster_is_up_in_a_few_seconds(cluster: SlurmTestCluster):
    assert cluster.started_in_s is not None and cluster.started_in_s < 10, cluster.started_in_s
    assert cluster.node_states() == {"node1": "idle", "node2": "idle", "node3": "idle"}
    assert cluster.env({}) == {"SLURM_CONF": str(cluster.slurm_conf)}
    # each node has an address of its own (what a multi-node job's MASTER_ADDR is taken from)
    for node in cluster.nodes:
        shown = commands.parse_scontrol(cluster.run(["scontrol", "show", "node", "-o", node]).stdout)
        assert (shown["NodeName"], shown["NodeAddr"]) == (node, cluster.node_address(node))
    assert cluster.node_address("node2") == "127.0.0.3"


def test_a_two_node_script_runs_as_its_user_one_task_per_node(cluster: SlurmTestCluster, workdir: Path):
    script = render("two_nodes", 1, [
        "echo \"batch ${CIBLE_PROBE_SECRET-unset}\"",
        "srun bash -c 'echo \"rank $SLURM_NODEID on $SLURMD_NODENAME $(hostname) as $(id -un) in $PWD\"'",
    ], nodes=2, cpus_per_task=1, memory_mb=128, time_limit_s=60, output_dir=str(workdir))
    job_id = submit(cluster, workdir, "two", script, CIBLE_PROBE_SECRET="s3cret")

    job = wait_for(cluster, job_id, ended)
    assert (job.state, job.user) == ("COMPLETED", JOB_USER)
    assert commands.verdict(job).status is JobStatus.COMPLETED
    lines = (workdir / f"slurm-{job_id}.out").read_text().splitlines()
    assert lines[0] == "batch unset"  # the submitter's environment stays with the submitter (env -i)
    ranks = sorted(line.split()[1:4:2] for line in lines[1:])
    assert ranks == [["0", "node1"], ["1", "node2"]], lines
    assert all(line.endswith(f"as {JOB_USER} in {workdir}") for line in lines[1:]), lines

    fields = commands.parse_scontrol_job(cluster.run(commands.scontrol_argv(job_id)).stdout)
    assert (fields["JobName"], fields["NumNodes"], fields["TimeLimit"]) == ("cible-two_nodes", "2", "00:03:00")
    assert commands.job_from_scontrol(fields) == SlurmJob(job_id, "COMPLETED", None, JOB_USER, 0, None, "00:03:00")


def test_without_accounting_sacct_says_so_and_the_completion_file_has_the_job(cluster: SlurmTestCluster,
                                                                               workdir: Path):
    job_id = submit(cluster, workdir, "fails", render("fails", 0, ["exit 3"], output_dir=str(workdir)))
    job = wait_for(cluster, job_id, ended)
    assert (job.state, job.reason) == ("FAILED", "NonZeroExitCode")

    accounting = cluster.run(commands.sacct_argv([job_id]), user=JOB_USER)
    assert accounting.returncode != 0 and commands.accounting_disabled(accounting.stderr), accounting

    completions = cluster.run(commands.sacct_argv([job_id], from_completions=True))
    assert completions.returncode == 0, completions.stderr
    row = commands.parse_sacct(completions.stdout)[job_id]
    assert (row.state, row.exit_code) == ("FAILED", 3)
    seen = commands.verdict(row)
    assert (seen.status, seen.code, seen.message) == (JobStatus.FAILED, "SlurmEnded",
                                                      f"Slurm ended job {job_id}: FAILED (exit code 3)")
    exit_code = commands.job_from_scontrol(commands.parse_scontrol_job(
        cluster.run(commands.scontrol_argv(job_id)).stdout)).exit_code
    assert exit_code == 3


def test_scancel_ends_a_running_job_as_cancelled(cluster: SlurmTestCluster, workdir: Path):
    job_id = submit(cluster, workdir, "sleeps", render("sleeps", 0, ["sleep 300"], output_dir=str(workdir)))
    running = wait_for(cluster, job_id, lambda job: job.state == "RUNNING")
    assert commands.verdict(running).status is JobStatus.RUNNING

    done = cluster.run(commands.scancel_argv([job_id]), user=JOB_USER)
    assert done.returncode == 0, done.stderr
    job = wait_for(cluster, job_id, ended)
    assert job.state == "CANCELLED"
    assert commands.verdict(job, cancel_requested=True).status is JobStatus.CANCELED
    assert commands.verdict(job).message == f"Slurm ended job {job_id}: CANCELLED"  # not asked by cible: Failed


def test_a_constraint_picks_the_node_with_that_feature(cluster: SlurmTestCluster, workdir: Path):
    job_id = submit(cluster, workdir, "feature", render("feature", 0, ["echo $SLURMD_NODENAME"],
                                                        constraint="gpu_sim", output_dir=str(workdir)))
    assert wait_for(cluster, job_id, ended).state == "COMPLETED"
    assert (workdir / f"slurm-{job_id}.out").read_text().strip() == "node3"


def test_a_job_over_its_partitions_limits_is_refused_at_submit(cluster: SlurmTestCluster, workdir: Path):
    def script(**settings: object) -> str:
        return render("refused", 0, ["true"], output_dir=str(workdir), **settings)

    assert refused(cluster, workdir, script(partition="short", nodes=2)) == "Node count specification invalid"
    assert refused(cluster, workdir, script(partition="short", time_limit_s=600)) == (
        "Requested time limit is invalid (missing or exceeds some limit)")
    assert refused(cluster, workdir, script(partition="nope")) == (
        "Invalid partition name specified (invalid partition specified: nope)")
    assert refused(cluster, workdir, script(gpus=1)) == "Invalid generic resource (gres) specification"
    assert refused(cluster, workdir, script(memory_mb=999_999)) == (
        "Requested node configuration is not available (Memory specification can not be satisfied)")
    # Any cible time limit asks for 3 minutes at least (its grace): above `short`'s. Without one, the job
    # gets the partition's limit (a job that outlives it ends as TIMEOUT: slice 7's test).
    job_id = submit(cluster, workdir, "short", script(partition="short"))
    job = wait_for(cluster, job_id, ended)
    assert (job.state, job.time_limit) == ("COMPLETED", "1:00")


def test_a_second_cluster_runs_beside_the_first_and_stop_leaves_nothing(cluster: SlurmTestCluster):
    other = SlurmTestCluster().start()
    try:
        assert other.controller_port != cluster.controller_port
        assert not set(other.node_ports.values()) & set(cluster.node_ports.values())
        workdir = other.workdir(JOB_USER)
        job_id = submit(other, workdir, "left", render("left", 0, ["sleep 300"], output_dir=str(workdir)))
        wait_for(other, job_id, lambda job: job.state == "RUNNING")
        assert cluster.node_states() == {"node1": "idle", "node2": "idle", "node3": "idle"}  # its own nodes
    finally:
        other.stop()
    assert not other.root.exists() and not other._leftovers()
    assert cluster.node_states() == {"node1": "idle", "node2": "idle", "node3": "idle"}
