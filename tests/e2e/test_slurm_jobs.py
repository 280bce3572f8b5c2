"""Jobs on a Slurm cluster end to end: the CLI against a real server, and a real Slurm (slurmctld
and three slurmd "nodes" at 127.0.0.2-4, cible.testing.slurm). Each attempt is one Slurm job whose
tasks run cible's pilot; files travel over HTTP (a pilot never reads the workspace folder).

Most tests use this machine's Slurm commands (the server on a login node: jobs run as the
server's user). One logs in to a login host over SSH as a user of its own, whose credential it
is: the job runs as that user."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Workspace, wait_until, write_yaml

from cible.backends.slurm import commands
from cible.testing.slurm import JOB_USER, SlurmTestCluster, needs_slurm, running_cluster
from cible.testing.sshd import LoopbackSshd, keygen, sshd_missing

LOGIN_HOST = "127.0.0.61"  # the login host's sshd (the Slurm nodes are 127.0.0.2-4)


@pytest.fixture(scope="module", autouse=True)
def _needs_slurm() -> None:
    needs_slurm(sshd_missing)


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmTestCluster]:
    with running_cluster() as slurm:
        yield slurm


@pytest.fixture(autouse=True)
def _no_slurm_job_left(cluster: SlurmTestCluster) -> Iterator[None]:
    """Each test starts on an empty cluster: no job of an earlier one (an allocation kept warm for a
    server that stopped ends on its own only after its keep) holds its nodes."""
    yield
    cluster.run(["scancel", "--user", "root"])
    cluster.run(["scancel", "--user", JOB_USER])


@pytest.fixture
def ws(tmp_path: Path, cluster: SlurmTestCluster) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path / "ws")
    spec = write_yaml(workspace.cwd, "hpc.yml", f"""
        name: hpc
        type: slurm
        partition: debug
        cible: {{environment: {{SLURM_CONF: "{cluster.slurm_conf}"}}}}
        """)
    workspace.json("compute", "attach", "-f", spec)
    yield workspace
    workspace.stop()


def job(ws: Workspace, name: str, body: str, compute: str = "hpc") -> str:
    spec = write_yaml(ws.cwd, f"{name}.yml", f"""
        compute: azureml:{compute}
        {body}
        """)
    return ws.json("job", "create", "-f", spec, "-n", name)["name"]


def slurm_jobs(cluster: SlurmTestCluster, name: str) -> list[commands.SlurmJob]:
    """The Slurm jobs of cible job `name` (Slurm names them cible-<name>), as squeue shows them."""
    done = cluster.run(["squeue", "-h", "-t", "all", "-n", f"cible-{name}", "-o", commands.SQUEUE_FORMAT])
    assert done.returncode == 0, done.stderr
    return list(commands.parse_squeue(done.stdout).values())


def test_a_job_is_one_slurm_job_whose_files_travel_over_http(ws: Workspace, cluster: SlurmTestCluster) -> None:
    (ws.cwd / "src").mkdir()
    (ws.cwd / "src" / "main.py").write_text(
        "import os, sys\n"
        "print('slurm job', os.environ['SLURM_JOB_ID'], 'in', os.getcwd())\n"
        "text = open(sys.argv[1]).read()\n"
        "open(os.path.join(sys.argv[2], 'upper.txt'), 'w').write(text.upper())\n")
    (ws.cwd / "data.txt").write_text("slurm runs the pilot\n")
    name = job(ws, "code-io", """
        code: src
        command: python3 main.py ${{inputs.data}} ${{outputs.result}}
        inputs:
          data: {type: uri_file, path: ./data.txt}
        outputs:
          result: {type: uri_folder}
        """)
    done = ws.wait_status(name, timeout=90)
    log = ws.run_log(name)
    assert done["status"] == "Completed", (done, log)
    [slurm_job] = slurm_jobs(cluster, name)
    assert f"slurm job {slurm_job.job_id} in " in log and "/.cible-agent/runs/code-io.1." in log, log
    dest = ws.cwd / "download"
    ws.cible("job", "download", "-n", name, "--output-name", "result", "-p", dest)
    assert (dest / "named-outputs" / "result" / "upper.txt").read_text() == "SLURM RUNS THE PILOT\n"
    # The pilots' token is gone from the cluster once the run ended: never left behind in a file.
    run_dir = Path(ws.job(name)["slurm"]["run_dir"])
    assert run_dir.is_relative_to(Path(pwd.getpwuid(os.getuid()).pw_dir, ".cible-agent", "runs"))
    assert (run_dir / "job.sbatch").exists() and not (run_dir / "token").exists()


def test_a_distributed_job_is_one_allocation_with_azures_variables(ws: Workspace, cluster: SlurmTestCluster) -> None:
    name = job(ws, "ranks", """
        command: echo "rank=$RANK world=$WORLD_SIZE node_rank=$NODE_RANK master=$MASTER_ADDR:$MASTER_PORT nodes=$SLURM_JOB_NUM_NODES"
        distribution: {type: pytorch, process_count_per_instance: 1}
        resources: {instance_count: 3}
        """)
    done = ws.wait_status(name, timeout=90)
    logs = "\n".join(p.read_text() for p in (ws.home / "runs" / name / "artifacts" / "user_logs").glob("*.txt"))
    assert done["status"] == "Completed", (done["error"], logs)
    for rank in range(3):
        assert f"rank={rank} world=3 node_rank={rank} master=127.0.0.2:" in logs and "nodes=3" in logs, logs
    assert len(slurm_jobs(cluster, name)) == 1  # one Slurm job, its tasks started by srun


def _torch_missing() -> str | None:
    try:
        import torch.distributed as dist
    except ImportError as exc:
        return f"torch is not installed: {exc}"
    return None if dist.is_available() else "torch.distributed is not available"


@pytest.mark.skipif(_torch_missing() is not None and os.environ.get("CI") != "true", reason=str(_torch_missing()))
def test_the_distributed_pytorch_example_runs_across_two_slurm_nodes(tmp_path: Path, cluster: SlurmTestCluster) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "clusters"
    ws = Workspace(tmp_path / "ws")
    try:
        shutil.copytree(examples / "src", ws.cwd / "src")
        shutil.copy(examples / "distributed-pytorch.yml", ws.cwd)
        # The example names cpu-cluster: here a Slurm compute of that name, whose nodes run this
        # test's Python (it has torch), as a site's module or conda Python would.
        ws.json("compute", "attach", "-f", write_yaml(ws.cwd, "cpu-cluster.yml", f"""
            name: cpu-cluster
            type: slurm
            cible: {{python: "{sys.executable}", environment: {{SLURM_CONF: "{cluster.slurm_conf}"}}}}
            """))
        name = ws.json("job", "create", "-f", ws.cwd / "distributed-pytorch.yml", "-n", "allreduce")["name"]
        done = ws.wait_status(name, timeout=240)
        logs = "\n".join(p.read_text() for p in (ws.home / "runs" / name / "artifacts" / "user_logs").glob("*.txt"))
        assert done["status"] == "Completed", (done, logs)
        for rank, node in enumerate((0, 0, 1, 1)):  # 2 nodes x 2 processes; the all-reduce of the ranks + 1
            assert f"rank={rank} world=4 node_rank={node} local_rank={rank % 2} sum=10 master=127.0.0.2" in logs, logs
        assert len(slurm_jobs(cluster, name)) == 1
    finally:
        ws.stop()


def test_sbatch_refusals_fail_the_job_at_once_with_slurms_words(ws: Workspace) -> None:
    name = job(ws, "no-partition", """
        command: echo never
        resources: {properties: {slurm: {partition: nope}}}
        """)
    done = ws.wait_status(name, timeout=30)
    assert done["status"] == "Failed" and done["error"]["code"] == "SlurmSubmitRefused", done
    assert "invalid partition" in done["error"]["message"].lower(), done["error"]
    # Over the partition's limits (short: one node at most): refused at submit, not left pending.
    name = job(ws, "too-wide", """
        command: echo never
        resources: {instance_count: 2, properties: {slurm: {partition: short}}}
        """)
    done = ws.wait_status(name, timeout=30)
    assert done["status"] == "Failed" and done["error"]["code"] == "SlurmSubmitRefused", done
    assert "node count" in done["error"]["message"].lower() or "limit" in done["error"]["message"].lower(), done


def test_a_job_slurm_holds_back_says_why_and_cancel_ends_the_slurm_job(ws: Workspace, cluster: SlurmTestCluster) -> None:
    wide = job(ws, "wide", """
        command: sleep 300
        resources: {instance_count: 3}
        """)
    ws.wait_status(wide, "Running", timeout=60)
    waiting = job(ws, "waiting", "command: echo my turn")

    def held() -> dict | None:
        shown = ws.job(waiting)
        return shown if "waiting for free nodes" in (shown.get("queue_reason") or "") else None

    shown = wait_until(held, 30, interval=0.2, message="the job to show Slurm's pending reason")
    assert shown["status"] == "Queued" and "(Resources)" in shown["queue_reason"], shown
    assert shown["slurm"]["job_id"] and shown["slurm"]["user"] == "root", shown
    # A job canceled while Slurm holds it: scancel, and it never runs.
    ws.cible("job", "cancel", "-n", waiting)
    assert ws.wait_status(waiting, timeout=30)["status"] == "Canceled"
    wait_until(lambda: [j for j in slurm_jobs(cluster, waiting) if j.state == "CANCELLED"] or None, 30,
               interval=0.2, message="Slurm to show the pending job cancelled")
    waiting = job(ws, "waiting-2", "command: echo my turn")
    ws.cible("job", "cancel", "-n", wide)
    done = ws.wait_status(wide, timeout=30)
    assert done["status"] == "Canceled", done
    wait_until(lambda: [j for j in slurm_jobs(cluster, wide) if j.state == "CANCELLED"] or None, 30, interval=0.2,
               message="Slurm to show the job cancelled")
    done = ws.wait_status(waiting, timeout=60)  # its turn came: it ran, and no longer says it waits
    assert done["status"] == "Completed" and not done.get("queue_reason"), done


def test_the_next_job_of_the_same_request_runs_in_the_allocation_the_last_one_left(
        ws: Workspace, cluster: SlurmTestCluster) -> None:
    """keep_allocation_s (default 60 s): no sbatch for the second job; a cancel still ends the Slurm job."""
    first = job(ws, "first", "command: echo first in $SLURM_JOB_ID")
    assert ws.wait_status(first, timeout=60)["status"] == "Completed"
    [allocation] = slurm_jobs(cluster, first)
    assert allocation.state == "RUNNING"  # its pilot waits for the next job
    second = job(ws, "second", "command: echo second in $SLURM_JOB_ID")
    assert ws.wait_status(second, timeout=60)["status"] == "Completed"
    assert f"second in {allocation.job_id}" in ws.run_log(second)
    assert ws.job(second)["slurm"]["kept_after_job"] == first and not slurm_jobs(cluster, second)
    third = job(ws, "third", "command: echo third && sleep 300")
    wait_until(lambda: "third" in ws.run_log(third) or None, 60, interval=0.2, message="the third job to start")
    ws.cible("job", "cancel", "-n", third)
    assert ws.wait_status(third, timeout=30)["status"] == "Canceled"
    wait_until(lambda: [j for j in slurm_jobs(cluster, first) if j.state == "CANCELLED"] or None, 30,
               interval=0.2, message="Slurm to show the allocation cancelled")


def test_a_cluster_on_slurm_scales_its_nodes_as_slurm_jobs_and_runs_jobs_on_them(
        ws: Workspace, cluster: SlurmTestCluster) -> None:
    """`cible: {provider: slurm, slurm: hpc}`: each node is a Slurm job running cible's agent; the
    cluster scales 0 -> 2 -> 0 and a 2-node job spans two Slurm nodes (MASTER_ADDR a NodeAddr)."""
    ws.json("compute", "create", "-f", write_yaml(ws.cwd, "on-slurm.yml", """
        name: on-slurm
        type: amlcompute
        size: Standard_DS1_v2
        min_instances: 0
        max_instances: 2
        idle_time_before_scale_down: 2
        cible: {provider: slurm, slurm: hpc, overcommit: true}
        """))
    name = job(ws, "on-nodes", """
        command: echo "rank=$RANK master=$MASTER_ADDR slurm=$SLURM_JOB_ID"
        distribution: {type: pytorch, process_count_per_instance: 1}
        resources: {instance_count: 2}
        """, compute="on-slurm")
    done = ws.wait_status(name, timeout=120)
    text = "\n".join(p.read_text() for p in (ws.home / "runs" / name / "artifacts" / "user_logs").glob("*.txt"))
    assert done["status"] == "Completed", (done, text)
    assert "rank=0 master=127.0.0." in text and "rank=1 master=127.0.0." in text, text
    node_jobs = {line.split("slurm=")[1] for line in text.splitlines() if "slurm=" in line}
    assert len(node_jobs) == 2 and all(node_jobs), text  # each rank in a Slurm job of its own: a node
    refused = ws.cible("compute", "detach", "-n", "hpc", "-y", check=False)  # the cluster draws its nodes there
    assert refused.returncode != 0 and "on-slurm" in refused.stderr, refused.stderr
    ws.wait_nodes("on-slurm", lambda states: states == [], timeout=60, message="the cluster back to 0 nodes")
    wait_until(lambda: not cluster.run(["squeue", "-h", "-t", "RUNNING", "-o", "%j"]).stdout.strip() or None, 30,
               interval=0.2, message="the nodes' Slurm jobs to end")


def test_a_job_slurm_ends_at_its_time_limit_fails_with_slurms_reason(ws: Workspace, cluster: SlurmTestCluster) -> None:
    # The `short` partition's MaxTime is 1 minute; the job asks for no limit of its own, so Slurm's ends it.
    name = job(ws, "overtime", """
        command: echo started && sleep 600
        resources: {properties: {slurm: {partition: short}}}
        """)
    # Its log streams while it runs (the pilot ships it as it grows), long before Slurm ends it.
    wait_until(lambda: "started" in ws.run_log(name) or None, 60, interval=0.2, message="the log to stream")
    # The job's status follows at the reconciler's next pass (the log may be a moment ahead of it).
    assert ws.wait_status(name, {"Running", "Failed", "Completed"}, timeout=30)["status"] == "Running"
    done = ws.wait_status(name, timeout=150)
    assert done["status"] == "Failed" and done["error"]["code"] == "SlurmEnded", done
    assert "TIMEOUT" in done["error"]["message"] and "1 min" in done["error"]["message"], done["error"]


@pytest.fixture(scope="module")
def login_host(cluster: SlurmTestCluster) -> Iterator[tuple[LoopbackSshd, Path]]:
    """An sshd standing for the cluster's login host, and JOB_USER's key (the server's file, 0600)."""
    root = Path(tempfile.mkdtemp(prefix="cible-login-"))
    root.chmod(0o755)  # sshd reads the authorized keys as the login user
    key = keygen(root / "keys" / "id_ed25519")
    sshd = LoopbackSshd(root / "sshd", (LOGIN_HOST,))
    sshd.authorize(JOB_USER, key.with_suffix(".pub"))
    sshd.start()
    yield sshd, key
    sshd.stop()
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(Path(pwd.getpwnam(JOB_USER).pw_dir) / ".cible-agent", ignore_errors=True)


def _down(sshd: LoopbackSshd) -> None:
    """The login host goes down: its sshd and every session it serves (cible's kept connection too)."""
    from cible.node import proc

    sessions = [child.pid for child in proc.Process(sshd.proc.pid).children(recursive=True)]
    sshd.stop()
    for pid in sessions:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_over_a_login_host_jobs_run_as_their_users_own_slurm_identity(
        tmp_path: Path, cluster: SlurmTestCluster, login_host: tuple[LoopbackSshd, Path]) -> None:
    sshd, key = login_host
    ws = Workspace(tmp_path / "ws")
    try:
        ws.json("compute", "attach", "--type", "slurm", "--name", "hpc-ssh", "--host", LOGIN_HOST,
                "--ssh-port", sshd.port, "--admin-username", JOB_USER, "--ssh-private-key-file", key,
                "--set", f"cible.environment.SLURM_CONF={cluster.slurm_conf}")
        name = job(ws, "as-user", 'command: echo "user=$(id -un) home=$HOME"', compute="hpc-ssh")
        done = ws.wait_status(name, timeout=90)
        log = ws.run_log(name)
        assert done["status"] == "Completed", (done, log)
        assert f"user={JOB_USER}" in log, log
        [slurm_job] = slurm_jobs(cluster, name)
        assert slurm_job.user == JOB_USER, slurm_job
        # The login host goes down: a job waits, saying why (never failed for it), and runs once it is
        # back. (Two nodes: not the request of the allocation the first job left warm, which needs no
        # login host to take.)
        _down(sshd)
        later = job(ws, "while-down", "command: echo back\n        resources: {instance_count: 2}", compute="hpc-ssh")

        def waits() -> dict | None:
            shown = ws.job(later)
            return shown if "cannot reach Slurm" in (shown.get("queue_reason") or "") else None

        shown = wait_until(waits, 60, interval=0.2, message="the job to say the login host does not answer")
        assert shown["status"] == "Queued" and LOGIN_HOST in shown["queue_reason"], shown
        sshd.start()
        assert ws.wait_status(later, timeout=120)["status"] == "Completed"
        # Another cible user without a credential of their own is refused at submit.
        ws.env["CIBLE_USER"] = "bob"
        refused = ws.cible("job", "create", "-f", ws.cwd / "as-user.yml", "-n", "bobs", check=False)
        assert refused.returncode != 0 and "set-credential" in refused.stderr, refused.stderr
    finally:
        ws.stop()
