"""The sbatch script of one attempt of a cible job.

Submitted with `sbatch --parsable <file>` (`commands.submit_argv`), so sbatch prints only the
job id. slurmctld keeps every script it is given (`scontrol write batch_script`, its state
folder), so no secret may ever be in one: `render` refuses text shaped like a cible token, and
whatever the caller names in `secrets`. The job gets the environment sbatch runs in
(`--export=ALL`), which `commands.submit_command` makes clean (`env -i`): what the server or a
login shell holds (tokens, cloud keys) stays there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

# Slurm's own limit is a backstop: the launcher's timeout (the job's limit) fires first and ends
# the run as cible's Failed/timeout, with its logs shipped; Slurm ends it only if that did not work.
GRACE_S = 120

# A scoped cible token (`cible-job.<name>.<salt>.<mac>`, `cible-node.<id>.<mac>`, a pilot's):
# two dot-separated parts after the kind. Job names carry no dots (`_JOB_NAME`), so
# `--job-name=cible-<job>` never looks like one.
_TOKEN = re.compile(r"cible-[a-z]+\.[A-Za-z0-9_=-]+\.[A-Za-z0-9_=.-]+")
_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")
# What sbatch takes on an `#SBATCH` line without quoting: no blank, quote, `#` or control character
# (a comma: several partitions, sbatch takes the first that can run the job).
_PLAIN = re.compile(r"[A-Za-z0-9_.+:@,-]+")
_CONSTRAINT = re.compile(r"[A-Za-z0-9_.,&|*!:\[\]()-]+")
# A folder for --output/--chdir: absolute, and no `%` (sbatch would expand it) nor blank.
_FOLDER = re.compile(r"/[A-Za-z0-9_./@+=,-]*")


class ScriptError(ValueError):
    """A value that cannot go into an sbatch script; the message says which and why."""


def time_minutes(time_limit_s: float | None) -> int | None:
    """`--time` in whole minutes for a job limited to `time_limit_s` (None: no limit): the limit
    plus GRACE_S, rounded up (Slurm counts minutes)."""
    if time_limit_s is None or time_limit_s <= 0:
        return None
    return math.ceil((time_limit_s + GRACE_S) / 60)


def render(job_name: str, attempt: int, command_lines: list[str], *, nodes: int = 1, cpus_per_task: int = 1,
           memory_mb: int | None = None, gpus: int = 0, time_limit_s: float | None = None,
           partition: str | None = None, qos: str | None = None, account: str | None = None,
           constraint: str | None = None, output_dir: str, secrets: Iterable[str] = ()) -> str:
    """The script: `#SBATCH` options for `nodes` nodes with one task each (`srun` in
    `command_lines` starts one process per node), then `command_lines` as given (the caller quotes
    them: they are bash). Slurm's output goes to `<output_dir>/slurm-<job id>.out`, and the job
    starts in `output_dir` (a folder the submitting user can write on every node)."""
    if not _JOB_NAME.fullmatch(job_name):
        raise ScriptError(f"job name {job_name!r} cannot name a Slurm job (letters, digits, _ and - only)")
    _at_least("attempt", attempt, 0)
    _at_least("nodes", nodes, 1)
    _at_least("cpus_per_task", cpus_per_task, 1)
    _at_least("gpus", gpus, 0)
    if memory_mb is not None:
        _at_least("memory_mb", memory_mb, 1)  # --mem=0 would mean "all of each node's memory"
    if not _FOLDER.fullmatch(output_dir) or "//" in output_dir or "/../" in f"{output_dir}/":
        raise ScriptError(f"output folder {output_dir!r}: an absolute path without blanks, quotes or %")
    output_dir = output_dir.rstrip("/") or "/"

    options = [f"--job-name=cible-{job_name}", f"--nodes={nodes}", "--ntasks-per-node=1",
               f"--cpus-per-task={cpus_per_task}"]
    if memory_mb is not None:
        options.append(f"--mem={memory_mb}")
    if gpus:
        options.append(f"--gres=gpu:{gpus}")
    if (minutes := time_minutes(time_limit_s)) is not None:
        options.append(f"--time={minutes}")
    for option, value in (("partition", partition), ("qos", qos), ("account", account)):
        if value:
            options.append(f"--{option}={_checked(option, value, _PLAIN)}")
    if constraint:
        options.append(f"--constraint={_checked('constraint', constraint, _CONSTRAINT)}")
    # --no-requeue: a Slurm job cible did not know was started again (a node failure) would run an
    # attempt whose pilots' token is gone; cible fails it with Slurm's reason instead.
    options += [f"--output={output_dir}/slurm-%j.out", f"--chdir={output_dir}", "--export=ALL", "--no-requeue"]

    for line in command_lines:
        if "\n" in line or "\r" in line:
            raise ScriptError(f"a command line holds a line break: {line!r}")
    text = "\n".join([
        "#!/bin/bash",
        f"# cible job {job_name}, attempt {attempt}: written by cible. Slurm keeps this script; it holds no secret.",
        *(f"#SBATCH {option}" for option in options),
        # srun passes the job's environment to its tasks, whatever a site's defaults say.
        "export SLURM_EXPORT_ENV=ALL",
        *command_lines,
        "",
    ])
    _refuse_secrets(text, secrets)
    return text


def _at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ScriptError(f"{name} must be a whole number >= {low}, not {value!r}")


def _checked(option: str, value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(value):
        raise ScriptError(f"Slurm {option} {value!r} has characters an sbatch script cannot take")
    return value


def _refuse_secrets(text: str, secrets: Iterable[str]) -> None:
    """Never a token in the script (the message does not repeat it)."""
    if _TOKEN.search(text):
        raise ScriptError("the sbatch script would hold a cible token; Slurm keeps scripts, so a pilot "
                          "reads its token from a file instead")
    for secret in secrets:
        if secret and secret in text:
            raise ScriptError("the sbatch script would hold a secret; Slurm keeps scripts")
