"""Reading what Slurm's commands print (texts taken from Slurm 22.05's real output) and mapping
Slurm's job states onto cible's."""

from __future__ import annotations

import pytest

from cible.backends.slurm.commands import (
    SlurmJob,
    SlurmOutputError,
    Submitted,
    accounting_disabled,
    ended_message,
    job_from_scontrol,
    limit_text,
    parse_sacct,
    parse_sbatch,
    parse_scontrol_job,
    parse_squeue,
    sacct_argv,
    squeue_argv,
    submit_argv,
    submit_refusal,
    verdict,
)
from cible.core.lifecycle.jobs import JobStatus

SCONTROL_RUNNING = (
    "JobId=9 JobName=wrap UserId=cible-slurm-user(1003) GroupId=cible-slurm-user(1003) MCS_label=N/A "
    "Priority=4294901752 Nice=0 Account=(null) QOS=(null) JobState=RUNNING Reason=None Dependency=(null) "
    "Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:02 TimeLimit=00:01:00 TimeMin=N/A "
    "SubmitTime=2026-12-05T22:05:05 Partition=short AllocNode:Sid=localhost:1754 ReqNodeList=(null) "
    "NodeList=node1 BatchHost=node1 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* "
    "TRES=cpu=1,mem=256M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* Command=(null) "
    "WorkDir=/tmp/a folder/out StdErr=/tmp/a folder/out/to-9.out StdIn=/dev/null StdOut=/tmp/a folder/out/to-9.out Power= \n")


def test_commands():
    assert submit_argv("/w/job.sh") == ["sbatch", "--parsable", "/w/job.sh"]
    assert squeue_argv(["3", "4"]) == ["squeue", "-h", "-t", "all", "-o", "%i|%T|%r|%u|%l|%S", "-j", "3,4"]
    assert sacct_argv(["3"]) == ["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode,Reason", "-j", "3"]
    assert sacct_argv(["3"], from_completions=True)[:2] == ["sacct", "-c"]


@pytest.mark.parametrize("stdout, submitted", [("12\n", Submitted("12")), ("12;ci\n", Submitted("12", "ci")),
                                               ("\n  7 \n", Submitted("7"))])
def test_sbatch_parsable(stdout, submitted):
    assert parse_sbatch(stdout) == submitted


@pytest.mark.parametrize("stdout", ["", "Submitted batch job 12\n", "12;\n", "abc"])
def test_sbatch_without_a_job_id(stdout):
    with pytest.raises(SlurmOutputError, match="no job id"):
        parse_sbatch(stdout)


@pytest.mark.parametrize("stderr, sentence", [
    (("sbatch: error: invalid partition specified: nope\n"
      "sbatch: error: Batch job submission failed: Invalid partition name specified\n"),
     "Invalid partition name specified (invalid partition specified: nope)"),
    ("sbatch: error: Batch job submission failed: Node count specification invalid\n",
     "Node count specification invalid"),
    ("sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some limit)\n",
     "Requested time limit is invalid (missing or exceeds some limit)"),
    (("sbatch: error: Memory specification can not be satisfied\n"
      "sbatch: error: Batch job submission failed: Requested node configuration is not available\n"),
     "Requested node configuration is not available (Memory specification can not be satisfied)"),
    ("sbatch: error: Invalid generic resource (gres) specification\n", "Invalid generic resource (gres) specification"),
    ("sbatch: warning: something\nsbatch: error: Batch job submission failed: Invalid qos specification\n",
     "Invalid qos specification"),
    ("", None), ("bash: sbatch: command not found\n", None),
])
def test_why_sbatch_refused(stderr, sentence):
    assert submit_refusal(stderr) == sentence


def test_squeue_rows():
    jobs = parse_squeue("11|CANCELLED|None|cible-slurm-user\n10|FAILED|NonZeroExitCode|cible-slurm-user\n"
                        "2|PENDING|PartitionNodeLimit|alice|1:00\n\n")
    assert jobs == {
        "11": SlurmJob("11", "CANCELLED", None, "cible-slurm-user"),
        "10": SlurmJob("10", "FAILED", "NonZeroExitCode", "cible-slurm-user"),
        "2": SlurmJob("2", "PENDING", "PartitionNodeLimit", "alice", time_limit="1:00"),
    }
    assert parse_squeue("") == {}  # forgotten jobs: no rows, not an error


def test_squeue_row_of_another_format():
    with pytest.raises(SlurmOutputError, match="2 fields"):
        parse_squeue("11|RUNNING\n")


def test_sacct_rows_with_and_without_accounting():
    jobs = parse_sacct("1|COMPLETED|0:0|None\n10|FAILED|3:0|NonZeroExitCode\n11|CANCELLED by 0|0:15|None\n"
                       "11.batch|CANCELLED|0:15|\n13|TIMEOUT|0:0|TimeLimit\n")
    assert jobs["1"] == SlurmJob("1", "COMPLETED", exit_code=0)
    assert jobs["10"] == SlurmJob("10", "FAILED", "NonZeroExitCode", exit_code=3)
    assert jobs["11"] == SlurmJob("11", "CANCELLED", exit_code=0, signal=15, cancelled_by="0")
    assert jobs["13"].state == "TIMEOUT" and "11.batch" not in jobs
    # `sacct -c` (the job completion file) leaves Reason empty
    assert parse_sacct("13|TIMEOUT|0:0|\n")["13"] == SlurmJob("13", "TIMEOUT", exit_code=0)
    assert accounting_disabled("Slurm accounting storage is disabled\n")
    assert not accounting_disabled("")


def test_scontrol_show_job_one_line():
    fields = parse_scontrol_job(SCONTROL_RUNNING)
    assert fields["JobState"] == "RUNNING" and fields["TimeLimit"] == "00:01:00"
    assert fields["AllocNode:Sid"] == "localhost:1754" and fields["CPUs/Task"] == "1"
    assert fields["TRES"] == "cpu=1,mem=256M,node=1,billing=1"
    assert fields["WorkDir"] == "/tmp/a folder/out"  # a value with a blank stays whole
    assert fields["Power"] == ""
    job = job_from_scontrol(fields)
    assert job == SlurmJob("9", "RUNNING", None, "cible-slurm-user", 0, None, "00:01:00")


def test_scontrol_without_a_job():
    with pytest.raises(SlurmOutputError, match="no job"):
        parse_scontrol_job("slurm_load_jobs error: Invalid job id specified\n")


@pytest.mark.parametrize("limit, text", [("1:00", "1 min"), ("00:03:00", "3 min"), ("02:00:00", "2 h"),
                                         ("1-00:00:00", "1 d"), ("1-04:00:00", "1 d 4 h"), ("00:02:30", "3 min"),
                                         ("UNLIMITED", None), (None, None), ("soon", None)])
def test_time_limits_in_words(limit, text):
    assert limit_text(limit) == text


def test_pending_is_queued_with_slurms_reason():
    seen = verdict(SlurmJob("12", "PENDING", "Resources"))
    assert seen.status is JobStatus.QUEUED and not seen.ended
    assert seen.queued_reason == "Slurm job 12 is pending: waiting for free nodes (Resources)"
    odd = verdict(SlurmJob("12", "PENDING", "AssocMaxJobsLimit"))
    assert odd.queued_reason == "Slurm job 12 is pending: AssocMaxJobsLimit"
    assert verdict(SlurmJob("12", "PENDING")).queued_reason == "Slurm job 12 is pending: waiting to be scheduled"
    unavailable = verdict(SlurmJob("12", "PENDING", "ReqNodeNotAvail,_UnavailableNodes:node3"))
    assert unavailable.queued_reason == ("Slurm job 12 is pending: the nodes it needs are not available "
                                         "(ReqNodeNotAvail,_UnavailableNodes:node3)")
    assert verdict(SlurmJob("12", "REQUEUED")).status is JobStatus.QUEUED  # Slurm runs it again: still queued


@pytest.mark.parametrize("state, status", [("CONFIGURING", JobStatus.PREPARING), ("RUNNING", JobStatus.RUNNING),
                                           ("COMPLETING", JobStatus.RUNNING), ("SUSPENDED", JobStatus.RUNNING)])
def test_started_states(state, status):
    seen = verdict(SlurmJob("5", state))
    assert (seen.status, seen.ended, seen.message) == (status, False, None)


def test_completed():
    seen = verdict(SlurmJob("5", "COMPLETED", exit_code=0))
    assert (seen.status, seen.ended, seen.code, seen.message) == (JobStatus.COMPLETED, True, None, None)


@pytest.mark.parametrize("job, message", [
    (SlurmJob("123", "TIMEOUT", "TimeLimit", time_limit="00:03:00"), "Slurm ended job 123: TIMEOUT (time limit 3 min)"),
    (SlurmJob("123", "TIMEOUT"), "Slurm ended job 123: TIMEOUT (time limit)"),
    (SlurmJob("10", "FAILED", "NonZeroExitCode", exit_code=3), "Slurm ended job 10: FAILED (exit code 3)"),
    (SlurmJob("10", "FAILED", exit_code=0, signal=9), "Slurm ended job 10: FAILED (signal 9)"),
    (SlurmJob("4", "NODE_FAIL", "NodeDown"), "Slurm ended job 4: NODE_FAIL (a node of the job failed, reason NodeDown)"),
    (SlurmJob("4", "OUT_OF_MEMORY"), "Slurm ended job 4: OUT_OF_MEMORY (out of memory)"),
    (SlurmJob("4", "PREEMPTED"), "Slurm ended job 4: PREEMPTED (preempted by a job of higher priority)"),
    (SlurmJob("4", "BOOT_FAIL"), "Slurm ended job 4: BOOT_FAIL (a node of the job failed to boot)"),
    (SlurmJob("4", "DEADLINE"), "Slurm ended job 4: DEADLINE (its deadline passed)"),
    (SlurmJob("4", "CANCELLED", cancelled_by="0"), "Slurm ended job 4: CANCELLED (by uid 0)"),
])
def test_ends_not_asked_for_fail_with_slurms_words(job, message):
    seen = verdict(job)
    assert (seen.status, seen.ended, seen.code, seen.message) == (JobStatus.FAILED, True, "SlurmEnded", message)
    assert ended_message(job) == message


def test_cancelled_by_cible_is_canceled():
    seen = verdict(SlurmJob("4", "CANCELLED"), cancel_requested=True)
    assert (seen.status, seen.ended, seen.code) == (JobStatus.CANCELED, True, None)
    assert verdict(SlurmJob("4", "TIMEOUT"), cancel_requested=True).status is JobStatus.FAILED


def test_states_are_read_whole_and_an_unknown_one_changes_nothing():
    assert parse_squeue("3|CANCELLED+|None|u\n")["3"].state == "CANCELLED"
    assert verdict(SlurmJob("3", "SOMETHING_NEW")) is None
