"""The job runner of Slurm computes: each attempt of a job is one Slurm job, submitted with `sbatch`
as the job's user (their credential, on the login host; or the server's user, with this machine's
Slurm commands), whose tasks run cible's pilot (cible.agent.pilot) on each node.

Slurm queues and places; cible does not count slots for it. What the job reconciler sees of a
run is the pilots' reports (the files the agent routes write, as for a cluster's nodes) read beside
Slurm's state (`squeue -t all`, else `scontrol`): a job Slurm holds back is Queued with Slurm's
reason; a job Slurm ended without the pilots' end (time limit, preemption, a node that failed)
fails with Slurm's words. sbatch's refusal (a bad partition, a job over its limits) fails the job
at once, saying what sbatch said; a login host that does not answer is the reconciler's to retry.

Nothing secret reaches Slurm: the pilots' token is written to a 0600 file of the run's folder on
the cluster, never into the script slurmctld keeps, and removed when the run ends.
"""

from __future__ import annotations

import logging
import secrets
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cible.backends.base.contract import EngineUnavailable
from cible.backends.slurm import commands
from cible.backends.slurm.access import SlurmAccess, open_exec, token_and_submit, unreachable, user_folder
from cible.backends.slurm.allocations import Allocation, Request, WarmPool
from cible.backends.slurm.commands import SlurmJob
from cible.backends.slurm.exec import SlurmExec
from cible.backends.slurm.observe import needs_slurm, observe
from cible.backends.slurm.script import ScriptError, render
from cible.backends.ssh.bundle import Bundle
from cible.backends.ssh.hosts import quote_path
from cible.core.errors import CibleError
from cible.core.lifecycle.jobs import JobStatus
from cible.core.lifecycle.runs import RunObservation
from cible.core.models.computes import CibleSlurmSettings
from cible.core.models.records import SlurmHandle, pilot_node_id

log = logging.getLogger("cible.server")
STATE_TTL_S = 1.0  # Slurm is asked about a job at most once a second
SLURM_PROPERTIES = ("partition", "qos", "account", "constraint")


@dataclass(frozen=True)
class SlurmSize:
    cpus: int = 1
    memory_mb: int | None = None
    gpus: int = 0


class SlurmRunner:
    name = "slurm"
    places_jobs = False

    def __init__(self, *, reports: Callable[[str, int, int], list[dict[str, Any] | None]],
                 merge: Callable[[list[dict[str, Any] | None]], RunObservation],
                 access: Callable[[str, str], SlurmAccess], owner_of: Callable[[str], str],
                 canceling: Callable[[str], bool], pilot_token: Callable[[str, int], str],
                 size_of: Callable[[str], SlurmSize], bundle: Callable[[], Bundle], server_url: str | None,
                 notify_nodes: Callable[..., None], log_dir: Callable[[str], Path]) -> None:
        self.reports = reports  # (job, attempt, nodes) -> each node rank's report (None: not yet)
        self.merge = merge
        self.access = access  # (compute, owner) -> SlurmAccess; raises when the owner has no credential
        self.owner_of = owner_of  # job -> the cible user who submitted it
        self.canceling = canceling  # job -> whether cible was asked to cancel it
        self.pilot_token = pilot_token
        self.size_of = size_of  # an instance_type -> the Slurm resources it stands for
        self.bundle = bundle
        self.server_url = server_url
        self.notify_nodes = notify_nodes
        self.log_dir = log_dir
        self._execs: dict[tuple[str, str], tuple[SlurmAccess, SlurmExec]] = {}
        # By (compute, Slurm job id): two clusters number their jobs alike.
        self._states: dict[tuple[str, str], tuple[float, SlurmJob | None]] = {}
        self._cleaned: set[tuple[str, str]] = set()
        self._scancelled: set[tuple[str, str]] = set()
        self._ends_seen: dict[tuple[str, str], float] = {}  # the pilots' end first seen, waiting for Slurm's
        self._lock = threading.Lock()
        self.pool = WarmPool()  # allocations kept for the next job (allocations.py)

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        """The server stops: the allocations kept idle end (nothing runs in them; after a restart
        they would not be known), those running a job go on."""
        for compute in {allocation.request.compute for allocation in self.pool.all_idle()}:
            self._end_idle(compute, "the server stops")
        with self._lock:
            execs, self._execs = list(self._execs.values()), {}
        for _, runner in execs:
            runner.close()

    # -- where commands run --------------------------------------------------------------------
    def _exec(self, compute: str, owner: str) -> tuple[SlurmAccess, SlurmExec]:
        access = self.access(compute, owner)
        key = (compute, owner)
        with self._lock:
            known = self._execs.get(key)
            if known is not None and known[0] == access:
                return known
        runner = open_exec(access)
        with self._lock:
            old = self._execs.get(key)
            self._execs[key] = (access, runner)
        if old is not None:
            old[1].close()
        return access, runner

    # -- submit --------------------------------------------------------------------------------
    def submit(self, job_name: str, plan: dict[str, Any]) -> dict[str, Any]:
        compute = plan["compute"]
        owner = self.owner_of(job_name)
        access, runner = self._exec(compute, owner)
        spec = access.compute
        settings = spec.cible
        attempt = int(plan.get("attempt", 1)) or 1
        keep_s = settings.keep_allocation_s if settings else CibleSlurmSettings().keep_allocation_s
        try:
            request: Request | None = self._request(plan, access)
        except ScriptError:
            request = None  # refused below, once the run has a handle to say it on
        if keep_s > 0 and request is not None and (warm := self._take_warm(job_name, request, access, plan)):
            return warm
        user, agent_dir = user_folder(runner, settings)
        run_dir = f"{agent_dir}/runs/{job_name}.{attempt}.{secrets.token_hex(3)}"
        port = 20000 + secrets.randbelow(20000)  # rank 0's rendezvous port (MASTER_PORT)
        handle = SlurmHandle(job_name=job_name, compute=compute, attempt=attempt, user=user, run_dir=run_dir,
                             master_port=port, keeps_allocation=keep_s > 0)
        folder = runner.ensure_bundle(self.bundle(), agent_dir)
        try:
            script = self._script(plan, access, handle, folder, agent_dir, keep_s, request)
        except ScriptError as exc:
            return _refused(handle, f"cible cannot submit this job to Slurm: {exc}")
        token = self.pilot_token(job_name, attempt)
        env = settings.environment if settings else {}
        done = runner.run(token_and_submit(run_dir, "job.sbatch", env), stdin=f"{token}\n{script}".encode())
        if done.status != 0:
            runner.run(f"rm -rf {quote_path(run_dir)}")  # its token first of all: tried again, it gets a new one
            unreachable(done, runner.where)
            refusal = commands.submit_refusal(done.stderr) or done.stderr.strip()[-500:] or f"exit {done.status}"
            return _refused(handle, f"sbatch refused the job on {runner.where}: {refusal}")
        submitted = commands.parse_sbatch(done.stdout)
        nodes = [pilot_node_id(submitted.job_id, rank) for rank in range(int(plan.get("instance_count") or 1))]
        log.info("job %s: Slurm job %s on %s as %s", job_name, submitted.job_id, compute, user)
        if keep_s > 0 and request is not None:
            self.pool.hold(Allocation(submitted.job_id, request, spec, user, run_dir, nodes, keep_s=keep_s,
                                      submitted_at=self.pool.clock(), job=job_name, attempt=attempt))
        return handle.model_copy(update={"slurm_job_id": submitted.job_id, "nodes": nodes}).model_dump(mode="json")

    def _take_warm(self, job_name: str, request: Request, access: SlurmAccess, plan: dict[str, Any]
                   ) -> dict[str, Any] | None:
        """The handle of `job_name`'s run in an allocation a run of the same user and request left
        warm (no sbatch: its pilots switch to this job once its handle is recorded, see
        `on_launch_recorded` and `next_for`); None when none fits."""
        attempt = int(plan.get("attempt", 1)) or 1
        allocation = self.pool.take(request, access.compute, plan.get("timeout"), job_name, attempt)
        if allocation is None:
            return None
        log.info("job %s: in Slurm job %s, kept warm after job %s", job_name, allocation.slurm_job_id,
                 allocation.last_job)
        return SlurmHandle(job_name=job_name, compute=request.compute, attempt=attempt, user=allocation.user,
                           run_dir=allocation.run_dir, master_port=20000 + secrets.randbelow(20000),
                           slurm_job_id=allocation.slurm_job_id, nodes=list(allocation.nodes), keeps_allocation=True,
                           after_job=allocation.last_job).model_dump(mode="json")

    def on_launch_recorded(self, raw: dict[str, Any]) -> None:
        """The reconciler recorded a run's handle: the pilots of the warm allocation it took are woken
        (their next heartbeat finds it, next_for)."""
        handle = SlurmHandle.model_validate(raw)
        if handle.after_job is not None:
            self.notify_nodes(*handle.nodes)

    def next_for(self, handle: SlurmHandle, node_id: str, successor: tuple[str, int] | None) -> dict[str, Any]:
        """The heartbeat reply to a pilot of `handle`'s allocation once its run ended: switch to
        `successor` (the job whose recorded handle took the allocation after this one's, as the store
        says) with that job's pilot token, wait, or stop."""
        kind, value = self.pool.next_for(handle.compute, handle.slurm_job_id or "", node_id, handle.job_name,
                                         successor)
        if kind == "switch":
            job, attempt = value
            return {"stop": False, "runs": [], "switch": {"job": job, "token": self.pilot_token(job, attempt)},
                    "wait_s": 0.0}
        if kind == "wait":
            return {"stop": False, "runs": [], "wait_s": value}
        return {"stop": True, "runs": []}

    def _request(self, plan: dict[str, Any], access: SlurmAccess) -> Request:
        """What the job asks Slurm for (ScriptError for what cannot be asked)."""
        spec = access.compute
        resources = plan.get("resources") or {}
        asked = dict((resources.get("properties") or {}).get("slurm") or {})
        unknown = sorted(set(asked) - set(SLURM_PROPERTIES))
        if unknown:
            raise ScriptError(f"resources.properties.slurm: unknown key(s) {', '.join(unknown)} "
                              f"(known: {', '.join(SLURM_PROPERTIES)})")
        for key, value in asked.items():
            if not isinstance(value, str):
                raise ScriptError(f"resources.properties.slurm.{key}: a string, not {value!r}")
        try:
            size = self.size_of(resources["instance_type"]) if resources.get("instance_type") else SlurmSize()
        except CibleError as exc:
            raise ScriptError(f"resources.instance_type: {exc.message}") from None
        pick = {key: asked.get(key) or getattr(spec, key, None) for key in ("partition", "qos", "account")}
        target = access.target
        identity = f"{target.where} {target.key_file or 'ssh-agent'}" if target is not None else "this machine"
        return Request(compute=plan["compute"], owner=access.owner, identity=identity,
                       nodes=int(plan.get("instance_count") or 1),
                       cpus=size.cpus, memory_mb=size.memory_mb, gpus=size.gpus, constraint=asked.get("constraint"),
                       **pick)

    def _script(self, plan: dict[str, Any], access: SlurmAccess, handle: SlurmHandle, bundle_dir: str,
                agent_dir: str, keep_s: int, request: Request | None = None) -> str:
        request = request or self._request(plan, access)
        settings = access.compute.cible
        url = (settings.server_url if settings and settings.server_url else self.server_url) or ""
        if not url:
            raise ScriptError("the server's URL is not known: set the compute's cible.server_url")
        python = settings.python if settings else "python3"
        env = settings.environment if settings else {}
        pilot = [python, "-m", "cible.agent.pilot", "--job", handle.job_name, "--token-file",
                 f"{handle.run_dir}/token", "--url", url.rstrip("/"), "--cache-root", agent_dir,
                 "--keep-s", str(keep_s)]
        node_id = pilot_node_id("${SLURM_JOB_ID}", "${SLURM_NODEID}")
        task = (f"exec {shlex.join(pilot)} --node-id \"{node_id}\" "
                f"--root {shlex.quote(handle.run_dir)}/node-\"${{SLURM_NODEID}}\"")
        if request.nodes > 1:  # one task per node, started by srun; the nodes' addresses (MASTER_ADDR first): NodeAddr
            start = [('addrs=""; for n in $(scontrol show hostnames "$SLURM_JOB_NODELIST"); do '
                      'a=$(scontrol show node -o "$n" | tr " " "\\n" | sed -n "s/^NodeAddr=//p"); '
                      'addrs="${addrs:+$addrs,}${a:-$n}"; done; export CIBLE_NODE_ADDRS="$addrs"'),
                     # srun takes no --cpus-per-task from the job's since Slurm 22.05: given again
                     ('srun --ntasks-per-node=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" --kill-on-bad-exit=0 '
                      f"bash -c {shlex.quote(task)}")]
        else:  # the batch script runs on the one node already: no job step to launch (about a second less)
            start = [f"SLURM_NODEID=0 CIBLE_NODE_ADDRS=127.0.0.1 bash -c {shlex.quote(task)}"]
        lines = [
            *(f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())),
            f"export PYTHONPATH={shlex.quote(bundle_dir)}",
            *start,
            "status=$?",
            # The pilots are gone (the last run reported, or an allocation kept warm ended): their
            # token and folders go; Slurm's output stays.
            f"rm -rf {shlex.quote(handle.run_dir)}/token {shlex.quote(handle.run_dir)}/node-*",
            "exit $status",
        ]
        return render(handle.job_name, handle.attempt, lines, nodes=request.nodes,
                      cpus_per_task=request.cpus, memory_mb=request.memory_mb, gpus=request.gpus,
                      time_limit_s=plan.get("timeout"), constraint=request.constraint,
                      output_dir=handle.run_dir, partition=request.partition, qos=request.qos,
                      account=request.account)

    # -- poll ----------------------------------------------------------------------------------
    def poll(self, raw: dict[str, Any]) -> RunObservation:
        """Raises EngineUnavailable, whatever went wrong, once the job is on Slurm: a run is never
        failed (nor its Slurm job cancelled) because its state could not be read this time."""
        handle = SlurmHandle.model_validate(raw)
        if handle.refused is not None:  # never submitted: no pilot, no Slurm job
            return observe(handle, RunObservation(), False, None, asked=False)
        try:
            return self._poll(handle)
        except EngineUnavailable:
            raise
        except Exception as exc:
            raise EngineUnavailable(f"cannot read Slurm job {handle.slurm_job_id}'s state: {exc}") from exc

    def _poll(self, handle: SlurmHandle) -> RunObservation:
        merged = self.merge(self.reports(handle.job_name, handle.attempt, len(handle.nodes)))
        canceling = self.canceling(handle.job_name)
        key = (handle.compute, handle.slurm_job_id or "")
        asks = needs_slurm(merged, canceling)
        job = self._state(handle) if asks else None
        waited = 0.0
        if merged.ended and asks:  # the pilots' end waits a while for Slurm's (see observe)
            waited = time.monotonic() - self._ends_seen.setdefault(key, time.monotonic())
        observation = observe(handle, merged, canceling, job, asked=asks, waited_s=waited)
        if observation.ended or not observation.alive:
            self._ends_seen.pop(key, None)
            if handle.keeps_allocation and self._keep(handle, observation):
                # Its pilots wait for the next job (next_for), having read their token long ago (a
                # run that took the allocation found it gone); the allocation's end removes their folders.
                if handle.after_job is None:
                    self._remove(handle.compute, self.owner_of(handle.job_name), handle.slurm_job_id or "",
                                 handle.run_dir, "token")
                self.notify_nodes(*handle.nodes)  # their next heartbeats find it idle: it can be taken
                return observation
            self.pool.drop(handle.compute, handle.slurm_job_id or "")
            if job is not None and job.state not in commands.ENDED_STATES:
                self._scancel(handle)  # a rank failed while the others run on: the allocation is freed
            self._clean_up(handle)
        elif observation.history == ["Queued"] and job is not None and (owners := _freed_for(job.reason)):
            # The allocations kept idle on its cluster may hold the nodes it waits for (or, for a
            # limit of its user's, count against it): a warm allocation is worth less than a queued job.
            owner = self.owner_of(handle.job_name)
            self._end_idle(handle.compute, f"job {handle.job_name} waits in Slurm's queue ({job.reason})",
                           None if owners == "any" else owner)
        return observation

    def _end_idle(self, compute: str, why: str, owner: str | None = None) -> None:
        """End the allocations kept idle on `compute` (of `owner` only, when given)."""
        for allocation in self.pool.idle(compute):
            if owner is not None and allocation.request.owner != owner:
                continue
            if self.pool.drop(compute, allocation.slurm_job_id) is not None:
                log.info("Slurm job %s, kept for a next job, ends: %s", allocation.slurm_job_id, why)
                try:
                    self._scancel_id(compute, allocation.request.owner, allocation.slurm_job_id)
                except Exception as exc:  # noqa: BLE001  (its pilots stop at their next heartbeat anyway)
                    log.warning("Slurm job %s could not be cancelled: %s", allocation.slurm_job_id, exc)
                    continue
                self._remove(compute, allocation.request.owner, allocation.slurm_job_id, allocation.run_dir,
                             "token", "node-*")

    def _keep(self, handle: SlurmHandle, observation: RunObservation) -> bool:
        """Whether a run that ended gives its allocation back for the next job: only a Completed one,
        in an allocation Slurm still runs, whose time limit Slurm says."""
        if observation.history[-1:] != [JobStatus.COMPLETED.value] or handle.slurm_job_id is None:
            return False
        allocation = self.pool.get(handle.compute, handle.slurm_job_id)
        if allocation is None or allocation.job != handle.job_name:
            # Serving no job, or another since: this run gave it back already (at an earlier poll).
            return allocation is not None
        try:
            # Read now, not from the cache: a run that ended within STATE_TTL_S of the last read
            # (an echo on an idle cluster) would be judged by the PENDING Slurm showed before it ran.
            job = self._state(handle, max_age_s=0.0)
        except Exception as exc:  # noqa: BLE001  (not kept: the pilots are told to stop)
            log.info("job %s: Slurm job %s is not kept (%s)", handle.job_name, handle.slurm_job_id, exc)
            return False
        limit = commands.limit_seconds(job.time_limit) if job is not None else None
        if job is None or job.state != "RUNNING" or limit is None:
            return False
        # What is left of its time limit, counted from Slurm's start (else, at most, from the submit).
        started = commands.started_epoch(job.start_time)
        elapsed = time.time() - started if started is not None else self.pool.clock() - allocation.submitted_at
        return self.pool.release(handle.compute, handle.slurm_job_id, handle.job_name, limit - max(0.0, elapsed))

    def _state(self, handle: SlurmHandle, max_age_s: float = STATE_TTL_S) -> SlurmJob | None:
        """The Slurm job as squeue (else scontrol) shows it, asked at most every `max_age_s`; None once
        Slurm has forgotten it. Raises when Slurm cannot be asked."""
        job_id = handle.slurm_job_id or ""
        key = (handle.compute, job_id)
        seen = self._states.get(key)
        if seen is not None and time.monotonic() - seen[0] < max_age_s:
            return seen[1]
        _, runner = self._exec(handle.compute, self.owner_of(handle.job_name))
        done = runner.run(shlex.join(commands.squeue_argv([job_id])))
        if done.status != 0 and "Invalid job id" not in done.stderr:
            unreachable(done, runner.where)
            raise RuntimeError(f"squeue on {runner.where} failed (exit {done.status}): {done.stderr.strip()[-300:]}")
        job = commands.parse_squeue(done.stdout).get(job_id) if done.status == 0 else None
        if job is None:
            shown = runner.run(shlex.join(commands.scontrol_argv(job_id)))
            if shown.status == 0 and shown.stdout.strip():
                job = commands.job_from_scontrol(commands.parse_scontrol_job(shown.stdout))
        self._states[key] = (time.monotonic(), job)
        return job

    def _clean_up(self, handle: SlurmHandle) -> None:
        """Once the run ended: its token and its nodes' folders are removed on the cluster (Slurm's
        output stays, for whoever looks into a failure). Best effort; tried again at the next poll."""
        if handle.refused is None:  # a refused submit left nothing there
            self._remove(handle.compute, self.owner_of(handle.job_name), handle.slurm_job_id or handle.run_dir,
                         handle.run_dir, "token", "node-*")

    def _remove(self, compute: str, owner: str, slurm_job_id: str, run_dir: str, *names: str) -> None:
        key = (compute, slurm_job_id)
        if key in self._cleaned:
            return
        folder = quote_path(run_dir)
        try:
            _, runner = self._exec(compute, owner)
            done = runner.run("rm -rf " + " ".join(f"{folder}/{name}" for name in names))
        except Exception as exc:  # noqa: BLE001  (best effort: tried again at the next poll)
            log.warning("Slurm job %s: its token on the cluster could not be removed: %s", slurm_job_id, exc)
            return
        if done.status == 0 and "node-*" in names:
            self._states.pop(key, None)
            self._cleaned.add(key)

    # -- cancel and logs -----------------------------------------------------------------------
    def cancel(self, raw: dict[str, Any]) -> None:
        handle = SlurmHandle.model_validate(raw)
        if handle.slurm_job_id is None:
            return
        self.notify_nodes(*handle.nodes)  # a pilot's next heartbeat reply carries the cancel
        allocation = self.pool.get(handle.compute, handle.slurm_job_id)
        if allocation is not None and allocation.job not in (None, handle.job_name):
            return  # this run's allocation serves another job now: that one's, not this one's, to end
        self.pool.drop(handle.compute, handle.slurm_job_id)  # a canceled run's allocation is not kept
        self._scancel(handle)

    def _scancel(self, handle: SlurmHandle) -> None:
        self._scancel_id(handle.compute, self.owner_of(handle.job_name), handle.slurm_job_id or "")

    def _scancel_id(self, compute: str, owner: str, slurm_job_id: str) -> None:
        """scancel the job, once (the reconciler asks again on every pass while a cancel is pending)."""
        key = (compute, slurm_job_id)
        if key in self._scancelled:
            return
        _, runner = self._exec(compute, owner)
        done = runner.run(shlex.join(commands.scancel_argv([slurm_job_id])))
        if done.status != 0 and "Invalid job id" not in done.stderr and "already completing" not in done.stderr:
            unreachable(done, runner.where)
            raise RuntimeError(f"scancel {slurm_job_id} on {runner.where} failed: {done.stderr.strip()[-300:]}")
        self._scancelled.add(key)

    def log_path(self, raw: dict[str, Any]) -> Path | None:
        return self.log_dir(raw["job_name"]) / "artifacts" / "user_logs" / "std_log.txt"


def _refused(handle: SlurmHandle, why: str) -> dict[str, Any]:
    return handle.model_copy(update={"refused": why}).model_dump(mode="json")


# Why a job waits that ending idle allocations can help: nodes held ("any" user's), or a limit
# its own user's allocations count against.
NODE_REASONS = frozenset({"Resources", "Priority", "ReqNodeNotAvail"})


def _freed_for(reason: str | None) -> str | None:
    if reason in NODE_REASONS:
        return "any"
    return "owner" if reason and reason.startswith(("QOS", "Assoc")) else None
