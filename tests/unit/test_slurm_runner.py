"""The Slurm job runner on this machine's Slurm commands (SlurmAccess target None): the compute's
`cible.environment` puts a folder of fake `sbatch`/`squeue`/`scancel` first on PATH, so the runner's
real shell commands run and what Slurm would have been given (argv, the script, the run's files) is
read back. Nothing secret on a command line or in the script; sbatch's refusals, a controller that
does not answer, a login host that cannot be reached."""

from __future__ import annotations

import getpass
import os
import stat
from pathlib import Path
from typing import Any, ClassVar

import pytest

import cible.backends.slurm.access as access_module
from cible.backends.base.contract import EngineUnavailable
from cible.backends.slurm.access import Reachable, SlurmAccess
from cible.backends.slurm.exec import COMMAND_TIMEOUT_S, Done, LocalExec
from cible.backends.slurm.runner import SlurmRunner, SlurmSize
from cible.backends.slurm.script import ScriptError
from cible.backends.ssh.bundle import Bundle
from cible.backends.ssh.connect import RemoteHostError
from cible.core.models.computes import CibleSlurmSettings, SlurmCompute
from cible.core.models.records import SlurmHandle
from cible.server.clusters.runs import merge_reports
from cible.server.tokens import Tokens

JOB = "khaki_boot"
TOKENS = Tokens("the-workspace-token")

# Each fake records its argv (one per line) and, for sbatch, the script and its folder; a file
# `<name>.stderr` beside it makes it print that and exit 1.
FAKE = r"""#!/bin/sh
name=$(basename "$0")
printf '%s\n' "$@" > "$FAKE_LOG/$name.argv"
if [ -f "$FAKE_LOG/$name.stderr" ]; then cat "$FAKE_LOG/$name.stderr" >&2; exit 1; fi
case "$name" in
  sbatch) cp "$2" "$FAKE_LOG/sbatch.script"; pwd > "$FAKE_LOG/sbatch.cwd"; env > "$FAKE_LOG/sbatch.env"
    n=$(cat "$FAKE_LOG/sbatch.n" 2>/dev/null || echo 4241); echo $((n + 1)) > "$FAKE_LOG/sbatch.n"; echo $((n + 1)) ;;
  squeue) [ -f "$FAKE_LOG/squeue.stdout" ] && cat "$FAKE_LOG/squeue.stdout" ;;
esac
exit 0
"""


class Spy(LocalExec):
    """This machine's commands, each command line kept (what `ps` would show of them)."""

    commands: ClassVar[list[tuple[str, bytes | None]]] = []

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT_S) -> Done:
        Spy.commands.append((command, stdin))
        return super().run(command, stdin=stdin, timeout=timeout)


class Setup:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_s: int = 60, **compute: Any) -> None:
        self.log = tmp_path / "log"
        self.log.mkdir()
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name in ("sbatch", "squeue", "scancel", "scontrol"):
            (bin_dir / name).write_text(FAKE)
            (bin_dir / name).chmod(0o755)
        self.agent_dir = tmp_path / "agent"
        bundle_dir = tmp_path / "bundle"
        (bundle_dir / "cible").mkdir(parents=True)
        (bundle_dir / "cible" / "__init__.py").write_text("")
        self.bundle = Bundle(path=bundle_dir, sha="0123abcd", files=("cible/__init__.py",))
        settings = CibleSlurmSettings(agent_dir=str(self.agent_dir), server_url="http://server.example:8080/",
                                      keep_allocation_s=keep_s,
                                      environment={"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(self.log)})
        self.compute = SlurmCompute(name="hpc", cible=settings, **compute)
        self.reports: list[dict[str, Any] | None] = [None, None]
        self.canceling = False
        self.notified: list[str] = []
        Spy.commands = []
        monkeypatch.setattr(access_module, "LocalExec", Spy)
        self.runner = SlurmRunner(
            reports=lambda job, attempt, nodes: list(self.reports), merge=merge_reports,
            access=lambda compute, owner: SlurmAccess(self.compute, None, owner), owner_of=lambda job: "alice",
            canceling=lambda job: self.canceling, pilot_token=TOKENS.pilot,
            size_of=lambda t: SlurmSize(cpus=4, memory_mb=8192, gpus=1), bundle=lambda: self.bundle,
            server_url=None, notify_nodes=lambda *nodes: self.notified.extend(nodes),
            log_dir=lambda job: tmp_path / "runs" / job)

    def argv(self, name: str) -> list[str] | None:
        path = self.log / f"{name}.argv"
        return path.read_text().splitlines() if path.exists() else None

    def fail(self, name: str, stderr: str) -> None:
        (self.log / f"{name}.stderr").write_text(stderr)


def plan(**changes: Any) -> dict[str, Any]:
    return {"job_name": JOB, "compute": "hpc", "attempt": 2, "instance_count": 2, "timeout": 600,
            "resources": {"instance_type": "Standard_NC4", "properties": {}}, **changes}


def options(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    made = Setup(tmp_path, monkeypatch, partition="batch", qos="normal", account="ml")
    yield made
    made.runner.close()


def test_submit_hands_slurm_a_script_for_the_jobs_nodes_and_gets_its_id(setup: Setup):
    handle = SlurmHandle.model_validate(setup.runner.submit(JOB, plan()))
    assert handle.refused is None and handle.slurm_job_id == "4242"
    assert handle.nodes == ["slurm-job-4242-0", "slurm-job-4242-1"]
    assert handle.attempt == 2 and handle.user == os.popen("id -un").read().strip()
    # An absolute agent_dir is shared by the cluster's users: each gets a folder of their own under it.
    assert handle.run_dir.startswith(f"{setup.agent_dir}/{getpass.getuser()}/runs/{JOB}.2.")
    assert setup.argv("sbatch") == ["--parsable", "job.sbatch"]
    assert Path((setup.log / "sbatch.cwd").read_text().strip()) == Path(handle.run_dir)
    script = (setup.log / "sbatch.script").read_text()
    assert script == (Path(handle.run_dir) / "job.sbatch").read_text()
    found = options(script)
    for option in ("--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=4", "--mem=8192", "--gres=gpu:1",
                   "--time=12", "--partition=batch", "--qos=normal", "--account=ml",
                   f"--output={handle.run_dir}/slurm-%j.out", f"--chdir={handle.run_dir}"):
        assert option in found, option
    assert f"--token-file {handle.run_dir}/token" in script
    assert "--url http://server.example:8080 " in script  # the compute's server_url, its slash dropped
    assert f"export PYTHONPATH={setup.agent_dir}/{getpass.getuser()}/bundles/0123abcd" in script
    assert "srun --ntasks-per-node=1" in script and f"rm -rf {handle.run_dir}/token {handle.run_dir}/node-*" in script
    assert "--keep-s 60" in script  # the compute's keep_allocation_s: the pilots wait that long for a next job
    assert handle.keeps_allocation


def test_the_token_is_in_a_0600_file_and_never_in_the_script_nor_on_a_command_line(setup: Setup):
    token = TOKENS.pilot(JOB, 2)
    handle = SlurmHandle.model_validate(setup.runner.submit(JOB, plan()))
    token_file = Path(handle.run_dir) / "token"
    assert token_file.read_text() == f"{token}\n"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(handle.run_dir).stat().st_mode) == 0o700
    assert token not in (setup.log / "sbatch.script").read_text()
    assert token not in (Path(handle.run_dir) / "job.sbatch").read_text()
    assert all(token not in line for line in setup.argv("sbatch"))
    assert Spy.commands and all(token not in command for command, _ in Spy.commands)
    # it went on stdin, once: the first line of the submit command's input
    assert [stdin for _, stdin in Spy.commands if stdin and token.encode() in stdin] == [
        f"{token}\n".encode() + (setup.log / "sbatch.script").read_bytes()]


def test_sbatch_runs_without_the_servers_environment(setup: Setup, monkeypatch: pytest.MonkeyPatch):
    """What sbatch is run with is what the job gets: the compute's environment, not the server's."""
    monkeypatch.setenv("SERVER_ONLY_SECRET", "hush-hush")
    setup.runner.submit(JOB, plan())
    seen = dict(line.split("=", 1) for line in (setup.log / "sbatch.env").read_text().splitlines() if "=" in line)
    assert "SERVER_ONLY_SECRET" not in seen and "hush-hush" not in (setup.log / "sbatch.env").read_text()
    assert seen["FAKE_LOG"] == str(setup.log)  # the compute's cible.environment is kept
    assert TOKENS.pilot(JOB, 2) not in (setup.log / "sbatch.env").read_text()


@pytest.mark.parametrize("timeout_s, minutes", [(600, 12), (601, 13), (60, 3), (3600, 62)])
def test_slurms_time_limit_is_the_jobs_plus_a_grace_in_whole_minutes(setup: Setup, timeout_s: int, minutes: int):
    handle = SlurmHandle.model_validate(setup.runner.submit(JOB, plan(timeout=timeout_s)))
    assert f"--time={minutes}" in options((Path(handle.run_dir) / "job.sbatch").read_text())


def test_a_job_without_a_timeout_leaves_the_limit_to_slurm(setup: Setup):
    handle = SlurmHandle.model_validate(setup.runner.submit(JOB, plan(timeout=None)))
    assert not [o for o in options((Path(handle.run_dir) / "job.sbatch").read_text()) if o.startswith("--time")]


def test_the_jobs_slurm_properties_override_the_computes(setup: Setup):
    slurm = {"partition": "gpu", "qos": "high", "constraint": "a100&ib"}
    handle = SlurmHandle.model_validate(setup.runner.submit(JOB, plan(
        resources={"instance_type": "Standard_NC4", "properties": {"slurm": slurm}})))
    found = options((Path(handle.run_dir) / "job.sbatch").read_text())
    assert "--partition=gpu" in found and "--qos=high" in found and "--constraint=a100&ib" in found
    assert "--account=ml" in found  # not overridden: the compute's
    assert "--partition=batch" not in found and "--qos=normal" not in found


def test_a_compute_without_slurm_settings_leaves_them_to_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    setup = Setup(tmp_path, monkeypatch)
    try:
        handle = SlurmHandle.model_validate(setup.runner.submit(JOB, plan(resources={})))
    finally:
        setup.runner.close()
    found = options((Path(handle.run_dir) / "job.sbatch").read_text())
    assert not [o for o in found if o.startswith(("--partition", "--qos", "--account", "--mem", "--gres"))]
    assert "--cpus-per-task=1" in found


def test_unknown_slurm_properties_refuse_the_job_naming_them(setup: Setup):
    raw = setup.runner.submit(JOB, plan(resources={"properties": {"slurm": {
        "partition": "gpu", "nodelist": "n1", "exclusive": True}}}))
    handle = SlurmHandle.model_validate(raw)
    assert handle.slurm_job_id is None and handle.nodes == []
    assert "exclusive, nodelist" in handle.refused and "partition" in handle.refused
    assert handle.refused.startswith("cible cannot submit this job to Slurm")
    assert setup.argv("sbatch") is None  # never submitted


def test_sbatchs_refusal_is_the_handles_in_slurms_words(setup: Setup):
    setup.fail("sbatch", "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    handle = SlurmHandle.model_validate(setup.runner.submit(JOB, plan()))
    assert handle.slurm_job_id is None and handle.nodes == []
    assert handle.refused == "sbatch refused the job on this machine: Invalid partition name specified"
    assert not Path(handle.run_dir).exists()  # its folder (and the token in it) removed


def test_a_controller_that_does_not_answer_is_the_engine_unavailable(setup: Setup):
    setup.fail("sbatch", "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
                         "(connect failure)\n")
    with pytest.raises(EngineUnavailable, match="Unable to contact slurm controller"):
        setup.runner.submit(JOB, plan())


def test_a_submit_slurm_could_not_take_leaves_no_token_on_the_cluster(setup: Setup):
    """Each try makes a new run folder; one whose sbatch did not happen (the controller down) is
    removed as a refused one is, or the pilot token stays in a file no run will ever remove."""
    setup.fail("sbatch", "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
                         "(connect failure)\n")
    for _ in range(2):
        with pytest.raises(EngineUnavailable):
            setup.runner.submit(JOB, plan())
    assert sorted(str(p) for p in setup.agent_dir.glob("*/runs/*/token")) == []


class Unreachable:
    """A login host that does not answer (what SshExec raises when it cannot connect)."""

    where = "the login host alice@login:22"

    def __init__(self) -> None:
        self.closed = False

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT_S) -> Done:
        raise RemoteHostError("login:22: connection refused", details={"reason": "refused"})

    def ensure_bundle(self, bundle: Bundle, agent_dir: str) -> str:
        raise RemoteHostError("login:22: connection timed out", details={"reason": "timeout"})

    def close(self) -> None:
        self.closed = True


def test_a_host_that_cannot_be_reached_is_the_engine_unavailable():
    inner = Unreachable()
    reachable = Reachable(inner)
    assert reachable.where == inner.where
    with pytest.raises(EngineUnavailable, match="cannot reach Slurm: login:22: connection refused"):
        reachable.run("squeue")
    with pytest.raises(EngineUnavailable, match="connection timed out"):
        reachable.ensure_bundle(Bundle(path=Path("/nonexistent"), sha="x", files=()), "/a")
    reachable.close()
    assert inner.closed


def test_submit_to_a_host_that_cannot_be_reached_raises_engine_unavailable(setup: Setup,
                                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(access_module, "LocalExec", lambda env: Unreachable())
    with pytest.raises(EngineUnavailable, match="cannot reach Slurm"):
        setup.runner.submit(JOB, plan())


def test_cancel_runs_scancel_with_the_id_and_tells_the_pilots(setup: Setup):
    raw = setup.runner.submit(JOB, plan())
    setup.runner.cancel(raw)
    assert setup.argv("scancel") == ["4242"]
    assert setup.notified == ["slurm-job-4242-0", "slurm-job-4242-1"]


def test_cancel_of_a_job_slurm_already_forgot_is_quiet(setup: Setup):
    raw = setup.runner.submit(JOB, plan())
    setup.fail("scancel", "scancel: error: Kill job error on job id 4242: Invalid job id specified\n")
    setup.runner.cancel(raw)
    assert setup.argv("scancel") == ["4242"]


def test_cancel_of_a_refused_job_does_nothing(setup: Setup):
    raw = setup.runner.submit(JOB, plan(resources={"properties": {"slurm": {"bogus": "1"}}}))
    setup.runner.cancel(raw)
    assert setup.argv("scancel") is None and setup.notified == []


def test_poll_reads_slurms_queue_reason_while_no_pilot_reported(setup: Setup):
    raw = setup.runner.submit(JOB, plan())
    (setup.log / "squeue.stdout").write_text("4242|PENDING|Resources|alice|00:12:00\n")
    seen = setup.runner.poll(raw)
    assert seen.history == ["Queued"] and "waiting for free nodes" in seen.queue_reason
    assert setup.argv("squeue") == ["-h", "-t", "all", "-o", "%i|%T|%r|%u|%l|%S", "-j", "4242"]


def test_poll_of_a_completed_run_does_not_ask_slurm_and_removes_the_token(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    setup = Setup(tmp_path, monkeypatch, keep_s=0)  # no allocation kept: the run's end is the Slurm job's
    handle = SlurmHandle.model_validate(setup.runner.submit(JOB, plan()))
    assert (Path(handle.run_dir) / "token").exists()
    done = {"attempt": 2, "history": ["Preparing", "Running", "Completed"], "exit_code": 0}
    setup.reports = [done, done]
    seen = setup.runner.poll(handle.model_dump(mode="json"))
    assert seen.ended and seen.history[-1] == "Completed"
    assert setup.argv("squeue") is None
    assert not (Path(handle.run_dir) / "token").exists()


def test_the_script_holds_no_token_even_when_asked_to(setup: Setup):
    """_script refuses a value shaped like a cible token (here smuggled in as the job's name)."""
    handle = SlurmHandle(job_name=JOB, compute="hpc", attempt=1, user="alice", run_dir="/r/k.1.ab", master_port=1)
    spec = setup.compute.model_copy(update={"cible": setup.compute.cible.model_copy(
        update={"environment": {"LEAK": TOKENS.pilot(JOB, 1)}})})
    with pytest.raises(ScriptError, match="cible token"):
        setup.runner._script(plan(), SlurmAccess(spec, None, "alice"), handle, "/b", "/home/alice/.cible-agent", 0)


# -- allocations kept warm (allocations.py) ----------------------------------------------------------

def _completed(setup: Setup, job: str = JOB, limit: str = "UNLIMITED") -> SlurmHandle:
    """`job` submitted, its two pilots' run Completed and read, in a Slurm job that still runs."""
    handle = SlurmHandle.model_validate(setup.runner.submit(job, plan(timeout=None)))
    (setup.log / "squeue.stdout").write_text(f"4242|RUNNING|None|alice|{limit}\n")
    done = {"attempt": 2, "history": ["Preparing", "Running", "Completed"], "exit_code": 0}
    setup.reports = [done, done]
    assert setup.runner.poll(handle.model_dump(mode="json")).history[-1] == "Completed"
    setup.reports = [None, None]
    for node in handle.nodes:  # the pilots, waiting
        assert setup.runner.next_for(handle, node, None)["stop"] is False
    return handle


def test_a_completed_runs_allocation_is_kept_and_the_next_job_of_its_request_runs_there(setup: Setup):
    first = _completed(setup)
    assert setup.notified == first.nodes  # its pilots woken: their next heartbeats find it idle
    setup.notified.clear()
    # Its token goes (the pilots read it when they started), the pilots' folders stay while it is kept.
    assert not (Path(first.run_dir) / "token").exists() and (Path(first.run_dir) / "job.sbatch").exists()
    (setup.log / "sbatch.argv").unlink()
    second = SlurmHandle.model_validate(setup.runner.submit("next_job", plan(timeout=None)))
    assert setup.argv("sbatch") is None  # no new Slurm job
    assert (second.slurm_job_id, second.nodes, second.run_dir) == ("4242", first.nodes, first.run_dir)
    assert second.after_job == JOB and second.keeps_allocation
    # Its pilots switch once its handle is recorded: the reconciler calls launched, which wakes them,
    # and the store then names it as the allocation's next job.
    assert "switch" not in setup.runner.next_for(first, first.nodes[0], None)
    setup.runner.on_launch_recorded(second.model_dump(mode="json"))
    assert setup.notified == first.nodes
    reply = setup.runner.next_for(first, first.nodes[0], ("next_job", 2))
    assert reply["switch"] == {"job": "next_job", "token": TOKENS.pilot("next_job", 2)}


@pytest.mark.parametrize("change", [{"instance_count": 1}, {"resources": {"properties": {"slurm": {"qos": "high"}}}}, {}])
def test_a_job_asking_for_something_else_gets_its_own_slurm_job(setup: Setup, change: dict[str, Any]):
    """Another node count or QOS; or no time limit of its own in an allocation that has one (in an
    allocation of its own it would get Slurm's whole default)."""
    _completed(setup, limit="01:00:00")
    (setup.log / "sbatch.argv").unlink()
    SlurmHandle.model_validate(setup.runner.submit("next_job", {**plan(timeout=None), **change}))
    assert setup.argv("sbatch") is not None


def test_a_job_that_fits_in_the_time_the_allocation_has_left_takes_it(setup: Setup):
    _completed(setup, limit="01:00:00")
    (setup.log / "sbatch.argv").unlink()
    too_long = SlurmHandle.model_validate(setup.runner.submit("long_job", plan(timeout=3600)))
    assert too_long.after_job is None and too_long.slurm_job_id == "4243"
    (setup.log / "sbatch.argv").unlink()
    fits = SlurmHandle.model_validate(setup.runner.submit("short_job", plan(timeout=600)))
    assert fits.after_job == JOB and setup.argv("sbatch") is None


def test_another_users_job_never_takes_the_allocation(setup: Setup):
    _completed(setup)
    setup.runner.owner_of = lambda job: "bob"
    (setup.log / "sbatch.argv").unlink()
    assert SlurmHandle.model_validate(setup.runner.submit("bobs_job", plan(timeout=None))).after_job is None
    assert setup.argv("sbatch") is not None


def test_a_canceled_run_ends_its_allocation_and_its_pilots_stop(setup: Setup):
    first = _completed(setup)
    second = SlurmHandle.model_validate(setup.runner.submit("next_job", plan(timeout=None)))
    setup.runner.on_launch_recorded(second.model_dump(mode="json"))
    setup.runner.cancel(first.model_dump(mode="json"))  # an old handle's cancel: not the allocation's end
    assert setup.argv("scancel") is None
    setup.runner.cancel(second.model_dump(mode="json"))
    assert setup.argv("scancel") == ["4242"]
    assert setup.runner.next_for(second, second.nodes[0], None) == {"stop": True, "runs": []}
    (setup.log / "sbatch.argv").unlink()
    assert SlurmHandle.model_validate(setup.runner.submit("third", plan(timeout=None))).after_job is None
    assert first.slurm_job_id == "4242"


def test_a_run_that_ended_within_a_second_of_slurm_saying_pending_still_keeps_its_allocation(setup: Setup):
    """The state read while the job was pending is cached a second; a run that was all over within
    it (an echo on an idle cluster) is judged by what Slurm says at its end."""
    handle = SlurmHandle.model_validate(setup.runner.submit(JOB, plan(timeout=None)))
    (setup.log / "squeue.stdout").write_text("4242|PENDING|None|alice|UNLIMITED\n")
    assert setup.runner.poll(handle.model_dump(mode="json")).history == ["Queued"]
    (setup.log / "squeue.stdout").write_text("4242|RUNNING|None|alice|UNLIMITED|2026-12-06T08:00:00\n")
    done = {"attempt": 2, "history": ["Preparing", "Running", "Completed"], "exit_code": 0}
    setup.reports = [done, done]
    assert setup.runner.poll(handle.model_dump(mode="json")).history[-1] == "Completed"
    setup.reports = [None, None]
    assert setup.runner.next_for(handle, handle.nodes[0], None)["stop"] is False  # kept: it waits
    assert setup.runner.submit("next_job", plan(timeout=None))["after_job"] == JOB


def test_a_slurm_job_that_no_longer_runs_is_not_kept(setup: Setup):
    handle = SlurmHandle.model_validate(setup.runner.submit(JOB, plan(timeout=None)))
    (setup.log / "squeue.stdout").write_text("4242|COMPLETING|None|alice|UNLIMITED\n")
    done = {"attempt": 2, "history": ["Preparing", "Running", "Completed"], "exit_code": 0}
    setup.reports = [done, done]
    assert setup.runner.poll(handle.model_dump(mode="json")).history[-1] == "Completed"
    assert setup.runner.next_for(handle, handle.nodes[0], None)["stop"] is True
    assert not (Path(handle.run_dir) / "token").exists()  # cleaned up as a run whose Slurm job ends


def test_a_job_waiting_in_slurms_queue_ends_the_idle_allocations_of_its_cluster(setup: Setup):
    first = _completed(setup)
    other = setup.runner.submit("one_node", plan(timeout=None, instance_count=1))  # another request: sbatch
    (setup.log / "squeue.stdout").write_text("4243|PENDING|JobHeldUser|alice|UNLIMITED\n")
    assert setup.runner.poll(other).history == ["Queued"]
    assert setup.argv("scancel") is None  # held by its user: no node would help it
    (setup.log / "squeue.stdout").write_text("4243|PENDING|Resources|alice|UNLIMITED\n")
    setup.runner._states.clear()
    assert setup.runner.poll(other).history == ["Queued"]
    assert setup.argv("scancel") == ["4242"]  # the idle allocation may hold the nodes it waits for
    assert setup.runner.next_for(first, first.nodes[0], None)["stop"] is True


def test_the_server_stopping_ends_its_idle_allocations_but_not_a_running_one(setup: Setup):
    _completed(setup)
    busy = setup.runner.submit("long_job", plan(timeout=None, instance_count=1))  # Slurm job 4243, running
    setup.runner.close()
    assert setup.argv("scancel") == ["4242"]
    assert SlurmHandle.model_validate(busy).slurm_job_id == "4243"
