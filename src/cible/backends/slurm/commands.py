"""The Slurm commands cible runs, and what it reads from their output (pure: no process here).

Job state comes from `squeue -t all` while slurmctld remembers the job (MinJobAge after its end),
from `scontrol show job -o` likewise, and from `sacct` only where accounting is on: a cluster
without slurmdbd answers "Slurm accounting storage is disabled" (`accounting_disabled`), and a job
slurmctld has forgotten is then simply unknown (no row), never guessed.

Each reader takes what the command printed and returns `SlurmJob`s; `verdict` maps one onto
cible's job statuses (`JobStatus`), with Slurm's reason as the text a user reads.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cible.core.lifecycle.jobs import JobStatus

# squeue's columns: job id, state (long form), reason, user, time limit. `-t all`: a job that ended
# a moment ago is still listed (squeue shows only pending and running ones by default).
SQUEUE_FORMAT = "%i|%T|%r|%u|%l|%S"
SACCT_FIELDS = "JobID,State,ExitCode,Reason"


class SlurmOutputError(ValueError):
    """A Slurm command printed something these readers do not understand (the text is quoted)."""


@dataclass(frozen=True)
class Submitted:
    job_id: str
    cluster: str | None = None  # sbatch --parsable prints `id;cluster` on a multi-cluster setup


@dataclass(frozen=True)
class SlurmJob:
    """One job as a Slurm command showed it. `state` is the base state (`CANCELLED`, not
    `CANCELLED by 0`); `reason` None when Slurm says None."""

    job_id: str
    state: str
    reason: str | None = None
    user: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    time_limit: str | None = None  # as Slurm writes it: `1:00`, `00:03:00`, `1-00:00:00`, `UNLIMITED`
    cancelled_by: str | None = None  # sacct's `CANCELLED by <uid>`
    start_time: str | None = None  # squeue's %S: `2026-12-06T05:00:00` (local time) once started


@dataclass(frozen=True)
class Verdict:
    """What cible makes of a Slurm state: a status, and for an end not asked for by cible, the
    error (`code` SlurmEnded) with Slurm's words."""

    status: JobStatus
    queued_reason: str | None = None  # Queued: why Slurm holds the job back
    ended: bool = False
    code: str | None = None
    message: str | None = None


# --- commands (argv; run by the caller, locally or over SSH) -----------------------------------

def submit_argv(script_path: str) -> list[str]:
    return ["sbatch", "--parsable", script_path]


def submit_command(script_path: str, environment: Mapping[str, str] | None = None) -> str:
    """The shell command that submits `script_path` from a clean environment: the job gets it
    (`--export=ALL`), so nothing the submitting shell holds (a server's secrets, a login shell's
    tokens) reaches the job, and Slurm need not load the user's login environment as
    `--export=NONE` does (about a second per job, measured with the test cluster)."""
    names = [f"{k}={shlex.quote(v)}" for k, v in sorted((environment or {}).items())]
    return " ".join(['env -i HOME="$HOME" PATH="$PATH" USER="$(id -un)" LOGNAME="$(id -un)" LANG=C.UTF-8',
                     *names, shlex.join(submit_argv(script_path))])


def squeue_argv(job_ids: Iterable[str]) -> list[str]:
    return ["squeue", "-h", "-t", "all", "-o", SQUEUE_FORMAT, "-j", ",".join(job_ids)]


def squeue_hosts_argv(job_ids: Iterable[str]) -> list[str]:
    """Each job's state and the Slurm node it runs on (a one-node job: cible's cluster nodes)."""
    return ["squeue", "-h", "-t", "all", "-o", "%i|%T|%N", "-j", ",".join(job_ids)]


def parse_squeue_hosts(stdout: str) -> dict[str, tuple[str, str]]:
    """Rows of `squeue_hosts_argv`: job id -> (base state, node name; empty while pending)."""
    found = {}
    for line in stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 3 or not fields[0]:
            if line.strip():
                raise SlurmOutputError(f"squeue printed a row of {len(fields)} fields: {line[:200]!r}")
            continue
        found[fields[0]] = (_base_state(fields[1]), fields[2].strip())
    return found


SINFO_SIZES_ARGV = ["sinfo", "-h", "-o", "%c|%m|%G"]


def parse_sinfo_sizes(stdout: str) -> list[tuple[int, int, int]]:
    """Rows of SINFO_SIZES_ARGV: (CPUs, memory in MB, GPUs) of each kind of node."""
    sizes = []
    for line in stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 3:
            continue
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,()]+)?:(\d+)", fields[2]))
        try:
            sizes.append((int(fields[0].rstrip("+")), int(fields[1].rstrip("+")), gpus))
        except ValueError:
            continue
    return sizes


def scontrol_node_argv(node: str) -> list[str]:
    return ["scontrol", "show", "node", "-o", node]


def node_address(stdout: str) -> str | None:
    """NodeAddr of `scontrol show node -o` (where the other nodes reach it)."""
    match = re.search(r"(?:^|\s)NodeAddr=(\S+)", stdout)
    return match.group(1) if match else None


def sacct_argv(job_ids: Iterable[str], *, from_completions: bool = False) -> list[str]:
    """`from_completions`: read the job completion file (`sacct -c`, JobCompType=jobcomp/filetxt, on
    the controller's machine) where there is no accounting database."""
    return ["sacct", *(["-c"] if from_completions else []), "-X", "-n", "-P", "-o", SACCT_FIELDS,
            "-j", ",".join(job_ids)]


def scontrol_argv(job_id: str) -> list[str]:
    return ["scontrol", "show", "job", "-o", job_id]


def scancel_argv(job_ids: Iterable[str]) -> list[str]:
    return ["scancel", *job_ids]


# --- sbatch ---------------------------------------------------------------------------------------

_SUBMITTED = re.compile(r"(\d+(?:_\d+)?)(?:;(\S+))?")


def parse_sbatch(stdout: str) -> Submitted:
    """The job id (and cluster) `sbatch --parsable` printed on success."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    match = _SUBMITTED.fullmatch(lines[-1]) if lines else None
    if not match:
        raise SlurmOutputError(f"sbatch --parsable printed no job id: {stdout.strip()[:200]!r}")
    return Submitted(match.group(1), match.group(2))


_SBATCH_ERROR = re.compile(r"^\s*sbatch: error:\s*(.+?)\s*$", re.MULTILINE)
_SUBMISSION_FAILED = "Batch job submission failed:"


def submit_refusal(stderr: str) -> str | None:
    """Why sbatch refused a job, in Slurm's words: the sentence after "Batch job submission
    failed:", followed by sbatch's other error lines in parentheses where it printed some ("Requested
    node configuration is not available (Memory specification can not be satisfied)"). None when
    stderr has no sbatch error line."""
    errors = _SBATCH_ERROR.findall(stderr)
    if not errors:
        return None
    failed = [e.split(_SUBMISSION_FAILED, 1)[1].strip() for e in errors if _SUBMISSION_FAILED in e]
    others = [e for e in errors if _SUBMISSION_FAILED not in e]
    if not failed:
        return "; ".join(others)
    sentence = failed[-1]
    return f"{sentence} ({'; '.join(others)})" if others else sentence


# --- squeue -----------------------------------------------------------------------------------------

def parse_squeue(stdout: str) -> dict[str, SlurmJob]:
    """Rows of `squeue -h -o '%i|%T|%r|%u'` (a fifth and sixth column, `%l` and `%S`, are read too),
    by job id. A job squeue no longer knows has no row."""
    jobs = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        fields = line.strip().split("|")
        if len(fields) not in (4, 5, 6) or not fields[0]:
            raise SlurmOutputError(f"squeue printed a row of {len(fields)} fields: {line[:200]!r}")
        job_id, state, reason, user, *more = fields
        more += [""] * (2 - len(more))
        jobs[job_id] = SlurmJob(job_id, _base_state(state), _reason(reason), user or None,
                                time_limit=more[0] or None, start_time=more[1] or None)
    return jobs


# --- sacct ------------------------------------------------------------------------------------------

def accounting_disabled(stderr: str) -> bool:
    """sacct's answer on a cluster without slurmdbd (and with no job completion file to read)."""
    return "accounting storage is disabled" in stderr.lower()


def parse_sacct(stdout: str) -> dict[str, SlurmJob]:
    """Rows of `sacct -X -n -P -o JobID,State,ExitCode,Reason` (or `sacct -c`'s, whose Reason is
    empty), by job id. Steps (`123.batch`) are skipped should -X be missing."""
    jobs = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        fields = line.strip().split("|")
        if len(fields) < 3:
            raise SlurmOutputError(f"sacct printed a row of {len(fields)} fields: {line[:200]!r}")
        job_id, state_text, exit_text, *rest = fields
        if "." in job_id:
            continue
        state, _, by = state_text.partition(" by ")
        code, signal = _exit_code(exit_text)
        jobs[job_id] = SlurmJob(job_id, _base_state(state), _reason(rest[0] if rest else ""),
                                exit_code=code, signal=signal, cancelled_by=by.strip() or None)
    return jobs


# --- scontrol ---------------------------------------------------------------------------------------

# Each field starts at a blank followed by `Key=`; keys hold `:` and `/` (`AllocNode:Sid`,
# `CPUs/Task`), values may hold blanks (a path, a comment).
_FIELD_START = re.compile(r"(?:^|\s)(?=[A-Za-z][A-Za-z0-9_:/]*=)")


def parse_scontrol(stdout: str) -> dict[str, str]:
    """The first record `scontrol show <job|node|partition> -o` printed, as a dict."""
    line = next((line for line in stdout.splitlines() if line.strip()), "")
    fields = {}
    for part in _FIELD_START.split(line.strip()):
        key, sep, value = part.partition("=")
        if sep and key:
            fields[key] = value.strip()
    return fields


def parse_scontrol_job(stdout: str) -> dict[str, str]:
    """`scontrol show job -o <id>`'s one line as a dict (`JobState`, `Reason`, `ExitCode`, …)."""
    fields = parse_scontrol(stdout)
    if "JobId" not in fields or "JobState" not in fields:
        raise SlurmOutputError(f"scontrol show job printed no job: {stdout.strip()[:200]!r}")
    return fields


def job_from_scontrol(fields: dict[str, str]) -> SlurmJob:
    code, signal = _exit_code(fields.get("ExitCode", ""))
    user = fields.get("UserId", "").split("(", 1)[0] or None
    return SlurmJob(fields["JobId"], _base_state(fields["JobState"]), _reason(fields.get("Reason", "")), user,
                    code, signal, fields.get("TimeLimit"))


# --- states -----------------------------------------------------------------------------------------

QUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
PREPARING_STATES = frozenset({"CONFIGURING"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING",
                            "STAGE_OUT"})
# Ends and what each means, where Slurm's state name alone is terse.
ENDED_STATES = {
    "COMPLETED": "",
    "FAILED": "",
    "CANCELLED": "",
    "TIMEOUT": "time limit",
    "NODE_FAIL": "a node of the job failed",
    "OUT_OF_MEMORY": "out of memory",
    "PREEMPTED": "preempted by a job of higher priority",
    "BOOT_FAIL": "a node of the job failed to boot",
    "DEADLINE": "its deadline passed",
    "REVOKED": "revoked by another cluster",
    "SPECIAL_EXIT": "",
}
# Why a job waits, in words, for the reasons a user meets most; others are shown as Slurm names them.
PENDING_REASONS = {
    "Resources": "waiting for free nodes",
    "Priority": "jobs of higher priority go first",
    "None": "waiting to be scheduled",
    "BeginTime": "its start time has not come",
    "Dependency": "waiting for the jobs it depends on",
    "JobHeldUser": "held by its user",
    "JobHeldAdmin": "held by an administrator",
    "ReqNodeNotAvail": "the nodes it needs are not available",
    "PartitionDown": "its partition is down",
    "PartitionInactive": "its partition is inactive",
    "PartitionNodeLimit": "it asks for more nodes than its partition allows",
    "PartitionTimeLimit": "its time limit is above its partition's",
    "QOSMaxJobsPerUserLimit": "its user runs as many jobs as the QOS allows",
    # A job over a per-job limit of its QOS waits until the QOS changes (a QOS with DenyOnLimit
    # refuses it at sbatch instead).
    "QOSMaxCpuPerJobLimit": "it asks for more CPUs than its QOS allows a job: it starts only if the QOS changes",
    "QOSMaxNodePerJobLimit": "it asks for more nodes than its QOS allows a job: it starts only if the QOS changes",
    "QOSMaxWallDurationPerJobLimit": "its time limit is above its QOS's: it starts only if the QOS changes",
    "QOSMaxGRESPerJob": "it asks for more GPUs than its QOS allows a job: it starts only if the QOS changes",
    "AssocGrpCpuLimit": "its account uses all the CPUs it may",
}


def verdict(job: SlurmJob, *, cancel_requested: bool = False) -> Verdict | None:
    """cible's reading of `job`; None for a state this code does not know (the caller keeps what it
    last saw). A job cancelled by cible (`cancel_requested`) is Canceled; one Slurm or an
    administrator cancelled, like every other end but COMPLETED, is Failed with code SlurmEnded
    and a message such as "Slurm ended job 123: TIMEOUT (time limit 3 min)"."""
    state = job.state
    if state in QUEUED_STATES:
        reason = job.reason or "None"
        # `ReqNodeNotAvail,_UnavailableNodes:node3`: the reason's name, then its details
        words = PENDING_REASONS.get(reason.split(",", 1)[0], reason)
        text = f"Slurm job {job.job_id} is {state.lower()}: {words}"
        named = words != reason and job.reason is not None
        return Verdict(JobStatus.QUEUED, queued_reason=f"{text} ({reason})" if named else text)
    if state in PREPARING_STATES:
        return Verdict(JobStatus.PREPARING)
    if state in RUNNING_STATES:
        return Verdict(JobStatus.RUNNING)
    if state not in ENDED_STATES:
        return None
    if state == "COMPLETED":
        return Verdict(JobStatus.COMPLETED, ended=True)
    if state == "CANCELLED" and cancel_requested:
        return Verdict(JobStatus.CANCELED, ended=True)
    return Verdict(JobStatus.FAILED, ended=True, code="SlurmEnded", message=ended_message(job))


def ended_message(job: SlurmJob) -> str:
    """"Slurm ended job 123: STATE (details)": what Slurm said, in words."""
    details = []
    if job.state == "TIMEOUT":
        limit = limit_text(job.time_limit)
        details.append(f"time limit {limit}" if limit else "time limit")
    elif meaning := ENDED_STATES.get(job.state):
        details.append(meaning)
    if job.state == "FAILED" and job.exit_code:
        details.append(f"exit code {job.exit_code}")
    if job.signal:
        details.append(f"signal {job.signal}")
    if job.cancelled_by:
        details.append(f"by uid {job.cancelled_by}")
    if job.reason and job.reason not in ("NonZeroExitCode", "TimeLimit") and job.reason not in details:
        details.append(f"reason {job.reason}")
    return f"Slurm ended job {job.job_id}: {job.state}" + (f" ({', '.join(details)})" if details else "")


NO_LIMIT = ("UNLIMITED", "INFINITE")


def limit_seconds(limit: str | None) -> float | None:
    """Slurm's `[days-]hours:minutes:seconds` (or `minutes:seconds`) in seconds; math.inf for
    UNLIMITED; None for a text not in that form (NOT_SET, Partition_Limit…)."""
    if limit in NO_LIMIT:
        return math.inf
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", limit or "")
    if not match:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def started_epoch(start_time: str | None) -> float | None:
    """squeue's %S (local time) as seconds since the epoch; None before the job started."""
    try:
        return datetime.fromisoformat(start_time).timestamp() if start_time else None
    except ValueError:  # N/A, Unknown
        return None


def limit_text(limit: str | None) -> str | None:
    """Slurm's `[days-]hours:minutes:seconds` (or `minutes:seconds`) as "3 min", "2 h", "1 d 4 h";
    None for no limit or a text not in that form."""
    total_s = limit_seconds(limit)
    if total_s is None or total_s == math.inf:
        return None
    total_min = math.ceil(total_s / 60)
    if total_min % 1440 == 0 and total_min >= 1440:
        return f"{total_min // 1440} d"
    if total_min >= 1440:
        return f"{total_min // 1440} d {(total_min % 1440) // 60} h"
    if total_min % 60 == 0 and total_min >= 60:
        return f"{total_min // 60} h"
    return f"{total_min} min"


def _base_state(state: str) -> str:
    """`CANCELLED+` (squeue's mark for a cancelled array task) and `CANCELLED by 0` → `CANCELLED`."""
    return state.strip().split(" ", 1)[0].rstrip("+").upper()


def _reason(text: str) -> str | None:
    text = text.strip()
    return None if text in ("", "None", "(null)") else text


def _exit_code(text: str) -> tuple[int | None, int | None]:
    """`3:0` → (3, None); `0:9` → (0, 9): exit code, then the signal that ended it (0: none)."""
    code, _, signal = text.strip().partition(":")
    try:
        return int(code), (int(signal) or None) if signal else None
    except ValueError:
        return None, None
