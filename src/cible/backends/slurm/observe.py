"""What a Slurm job's run looks like to cible (pure): its pilots' reports merged (as a cluster's
nodes' are), read beside Slurm's own state of the job.

- The pilots' end counts when it is Completed, or Canceled when cible asked for the cancel.
- A Failed or Canceled end cible did not ask for waits for Slurm's end (END_GRACE_S at most: a
  rank that failed while the others run on ends the job then); when Slurm ended the job itself (its time limit, preemption, a failed node, a cancel from outside cible), Slurm's words
  say why, for a command killed by Slurm's signal looks like any failure to its launcher.
- No end from the pilots: Slurm's state says it. PENDING is Queued with Slurm's reason; an end
  Slurm saw without the pilots' report fails with Slurm's words; a job Slurm no longer knows of
  fails saying so.
"""

from __future__ import annotations

from cible.backends.slurm.commands import SlurmJob, Verdict, verdict
from cible.core.lifecycle.jobs import TERMINAL, JobStatus
from cible.core.lifecycle.runs import RunObservation
from cible.core.models.records import SlurmHandle

# How long the pilots' Failed (or uncalled-for Canceled) end waits for Slurm's own: about Slurm's
# KillWait, the time its signalled job takes to leave its nodes.
END_GRACE_S = 15.0
# Ends that are Slurm's doing, not the job's: its words beat what the pilots saw (a command killed).
SLURM_ENDS = frozenset({"TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "CANCELLED"})


def needs_slurm(merged: RunObservation, canceling: bool) -> bool:
    """Whether Slurm must be asked: not once the pilots' end settles it."""
    end = merged.history[-1] if merged.ended else None
    return not (end == JobStatus.COMPLETED.value or (end == JobStatus.CANCELED.value and canceling))


def observe(handle: SlurmHandle, merged: RunObservation, canceling: bool, job: SlurmJob | None, *,
            asked: bool = True, waited_s: float = 0.0) -> RunObservation:
    """The run as the reconciler reads it. `job`: Slurm's state (None: Slurm does not know it, or
    was not `asked` because the pilots' end settles it). `waited_s`: how long the pilots' end has
    waited for Slurm's; after END_GRACE_S it stands (a rank failed while the others run on)."""
    if handle.refused is not None:
        return RunObservation(history=["Failed"], alive=False,
                              error={"code": "SlurmSubmitRefused", "message": handle.refused})
    if not asked:
        return merged
    found = verdict(job, cancel_requested=canceling) if job is not None else None
    progress = [s for s in merged.history if s not in TERMINAL]
    if merged.ended:  # Failed, or Canceled without cible asking: by the job itself, or by Slurm?
        if found is not None and not found.ended and waited_s < END_GRACE_S:
            return RunObservation(history=progress)  # Slurm's end shows once the job left its nodes
        if found is not None and job.state in SLURM_ENDS:
            return _ended(handle, progress, found)
        if merged.history[-1] == JobStatus.CANCELED.value:  # stopped by a signal neither cible nor Slurm sent
            state = job.state if job is not None else "no longer known to Slurm"
            return RunObservation(history=[*progress, "Failed"], alive=False, error={
                "code": "SlurmEnded", "message": f"the job's launcher was stopped, but not by cible (Slurm job "
                                                 f"{handle.slurm_job_id}: {state})"})
        return merged
    if job is None:
        return RunObservation(history=[*progress, "Failed"], alive=False, error={
            "code": "SlurmEnded", "message": f"Slurm no longer knows job {handle.slurm_job_id}, and its pilots "
                                             f"reported no end (see its output in {handle.run_dir} on the cluster)"})
    if found is None:  # a state this release does not know: what the pilots said holds
        return merged
    if found.ended:
        if found.status == JobStatus.COMPLETED:
            found = Verdict(JobStatus.FAILED, ended=True, code="LauncherLost", message=(
                f"Slurm job {handle.slurm_job_id} ended, but its pilots reported no end; see slurm-"
                f"{handle.slurm_job_id}.out in {handle.run_dir} on the cluster"))
        return _ended(handle, progress, found)
    if found.status == JobStatus.QUEUED:
        return RunObservation(history=["Queued"], queue_reason=found.queued_reason)
    return merged if merged.history else RunObservation(history=["Preparing"])


def _ended(handle: SlurmHandle, progress: list[str], found: Verdict) -> RunObservation:
    error = {"code": found.code, "message": found.message} if found.code else None
    if found.status == JobStatus.CANCELED:
        error = {"code": "Canceled", "message": f"Slurm job {handle.slurm_job_id} was cancelled"}
    return RunObservation(history=[*progress, found.status.value], alive=False, error=error)
