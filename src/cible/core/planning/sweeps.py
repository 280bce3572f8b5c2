"""What a sweep does next: pure decisions over its trials (the orchestrator applies them).

A sweep's trials are child command jobs, trial ``i`` created from ``trial_job_spec(spec, params,
index=i)``. Each pass the orchestrator hands ``decide_sweep`` the trials as they are (status,
sampled parameters, primary metric history as logged to MLflow) and gets back which trials to
create, which to cancel, and whether the sweep ends.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cible.core.lifecycle.jobs import TERMINAL, JobStatus
from cible.core.models.jobs import JobInput
from cible.core.models.sweeps import SweepJob
from cible.core.planning.early_termination import terminations
from cible.core.planning.sampling import SampledTrial, grid_size, sample_trials
from cible.core.specs.azureml.expressions import format_literal

_TERMINAL = {s.value for s in TERMINAL}
_SEARCH_SPACE = re.compile(r"\$\{\{\s*search_space\.(?P<name>[A-Za-z_][A-Za-z0-9_-]*)\s*\}\}")
_LITERAL_TYPES = {"number", "integer", "boolean", "string"}


@dataclass(frozen=True)
class TrialView:
    """One trial as a pass sees it."""

    index: int
    name: str
    status: str  # a JobStatus value
    params: dict[str, Any]
    metric_history: tuple[float, ...]  # the primary metric, in the order it was logged
    error: str | None = None  # why it failed, when it did


# A sweep whose first trials all fail stops there (a broken command would otherwise fail every one of
# max_total_trials, 1000 by default): it fails with the first trial's error.
FAILED_TRIALS_BEFORE_GIVING_UP = 3
# New trials one pass starts at most: a sweep of 100 000 concurrent trials would otherwise hold the
# orchestrator (and every other sweep and pipeline) for as long as 100 000 submits take. The next
# pass, soon after, starts the following ones.
MAX_NEW_TRIALS_PER_PASS = 50


@dataclass
class SweepDecision:
    new_trials: list[dict[str, Any]] = field(default_factory=list)  # params; indexes follow the existing ones
    cancel: dict[str, str] = field(default_factory=dict)  # trial name -> why
    end: str | None = None  # "Completed", "Failed" or "Canceled"
    error: dict[str, str] | None = None  # {code, message} when the sweep does not complete
    best_trial: str | None = None


def _live(trial: TrialView) -> bool:
    return trial.status not in _TERMINAL


def best_trial(spec: SweepJob, trials: Sequence[TrialView]) -> str | None:
    """The Completed trial whose last logged primary metric is best (MLflow's latest value); ties: lower index."""
    maximize = spec.objective.goal == "maximize"
    scored = [(t.metric_history[-1], t.index, t.name) for t in trials
              if t.status == JobStatus.COMPLETED.value and t.metric_history]
    if not scored:
        return None
    return min(scored, key=lambda s: (-s[0] if maximize else s[0], s[1]))[2]


def _sampler_history(trials: Sequence[TrialView]) -> list[SampledTrial]:
    history = []
    for trial in sorted(trials, key=lambda t: t.index):
        last = trial.metric_history[-1] if trial.metric_history else None
        if _live(trial):
            history.append(SampledTrial(trial.params, None, "running"))
        elif trial.status == JobStatus.COMPLETED.value and last is not None:
            history.append(SampledTrial(trial.params, last, "complete"))
        elif trial.status == JobStatus.CANCELED.value and last is not None:
            history.append(SampledTrial(trial.params, last, "pruned"))  # cut early (or by a cancel)
        else:
            history.append(SampledTrial(trial.params, None, "failed"))
    return history


def decide_sweep(spec: SweepJob, trials: Sequence[TrialView], *, seed_key: str, elapsed_s: float,
                 cancel_requested: bool) -> SweepDecision:
    """The next step of a sweep: new trials up to the limits, cancels, and its end.

    ``seed_key`` (the sweep's name) seeds the sampler when the spec has no seed; ``elapsed_s`` is
    the time since the sweep started, held against ``limits.timeout``.
    """
    limits = spec.limits
    decision = SweepDecision(best_trial=best_trial(spec, trials))
    live = [t for t in trials if _live(t)]
    cancelable = [t for t in live if t.status != JobStatus.CANCEL_REQUESTED.value]

    stop = None
    if cancel_requested:
        stop = {"code": "Canceled", "message": "the sweep was canceled"}
    elif elapsed_s >= limits.timeout:
        stop = {"code": "SweepTimeout",
                "message": f"the sweep reached its limits.timeout of {limits.timeout} s and was canceled"}
    if stop is not None:
        decision.cancel = {t.name: stop["message"] for t in cancelable}
        if not live:
            decision.end, decision.error = "Canceled", stop
        return decision

    first = sorted(trials, key=lambda t: t.index)[:FAILED_TRIALS_BEFORE_GIVING_UP]
    if (len(first) == FAILED_TRIALS_BEFORE_GIVING_UP and all(t.status == JobStatus.FAILED.value for t in first)
            and not any(t.status == JobStatus.COMPLETED.value for t in trials)):
        decision.cancel = {t.name: "its sweep failed" for t in cancelable}
        if not live:
            decision.end = "Failed"
            decision.error = {"code": "TrialsFailed", "message": (
                f"the first {len(first)} trials failed, so the sweep stopped; trial {first[0].name} failed: "
                f"{first[0].error or 'no error recorded'}")}
        return decision

    decision.cancel = terminations(spec.early_termination, spec.objective.goal,
                                   {t.name: t.metric_history for t in trials if t.metric_history},
                                   {t.name for t in cancelable})

    remaining = limits.max_total_trials - len(trials)
    size = grid_size(spec)
    if size is not None:
        remaining = min(remaining, size - len(trials))
    wanted = min(limits.concurrent_trials - len(live), remaining, MAX_NEW_TRIALS_PER_PASS)
    if wanted > 0:
        decision.new_trials = sample_trials(spec, _sampler_history(trials), wanted, seed_key=seed_key)
    if live or decision.new_trials:
        return decision

    if decision.best_trial is not None:
        decision.end = "Completed"
        return decision
    decision.end = "Failed"
    decision.error = {"code": "NoPrimaryMetric", "message": _no_metric(spec, trials)}
    return decision


def _no_metric(spec: SweepJob, trials: Sequence[TrialView]) -> str:
    metric = spec.objective.primary_metric
    if not trials:
        return f"no trial ran, so none logged the primary metric '{metric}'"
    counts = Counter(t.status for t in trials)
    ended = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return (f"no completed trial logged the primary metric '{metric}' (trials: {ended}); a trial logs it with "
            f"mlflow.log_metric('{metric}', value) or an autolog that names it exactly so")


# ---- the trial's job ------------------------------------------------------------------


def render_search_space(command: str, params: dict[str, Any]) -> str:
    """``${{search_space.x}}`` -> the value of x as text; other expressions stay for the trial job."""
    return _SEARCH_SPACE.sub(lambda m: format_literal(params[m["name"]]) if m["name"] in params else m[0], command)


def _input_value(definition: JobInput) -> Any:
    """A component input's default as the job input that carries it."""
    if definition.type in _LITERAL_TYPES:
        return definition.default
    return {"type": definition.type, "path": definition.default}


def trial_job_spec(spec: SweepJob, params: dict[str, Any], *, index: int) -> dict[str, Any]:
    """The command job of trial ``index`` with hyperparameters ``params`` (loads as a CommandJob).

    The trial's inputs are the sweep's; in the command-component form, the component's inputs
    with a default take it unless the sweep gives them, and those that are hyperparameters take
    the sampled value. The trial's outputs are the component's, then the sweep's.
    """
    trial = spec.trial

    def dump(model: Any) -> Any:
        return model.model_dump(mode="json", exclude_none=True, by_alias=True) if model is not None else None

    inputs: dict[str, Any] = {}
    for name, definition in trial.inputs.items():
        if definition.default is not None:
            inputs[name] = _input_value(definition)
    inputs.update({name: dump(value) if isinstance(value, JobInput) else value for name, value in spec.inputs.items()})
    inputs.update({name: params[name] for name in trial.inputs if name in params})
    outputs: dict[str, Any] = {}
    for name in {**trial.outputs, **spec.outputs}:  # the sweep's settings over the component's definition
        declared, given = trial.outputs.get(name), spec.outputs.get(name)
        merged = {**(dump(declared) or {}),
                  **(given.model_dump(mode="json", exclude_unset=True) if given is not None else {})}
        outputs[name] = merged or None

    job: dict[str, Any] = {
        "type": "command",
        "command": render_search_space(trial.command, params),
        "experiment_name": spec.experiment_name,
        "compute": spec.compute,
        "environment": trial.environment if isinstance(trial.environment, str) else dump(trial.environment),
        "code": trial.code,
        "environment_variables": dict(trial.environment_variables) or None,
        "distribution": dump(trial.distribution),
        "resources": dump(trial.resources or spec.resources),
        "queue_settings": dump(spec.queue_settings),
        "inputs": inputs or None,
        "outputs": outputs or None,
        "tags": dict(spec.tags) or None,
    }
    timeout = spec.limits.trial_timeout or (trial.limits.timeout if trial.limits else None)
    if timeout is not None:
        job["limits"] = {"timeout": timeout}
    return {key: value for key, value in job.items() if value is not None}
