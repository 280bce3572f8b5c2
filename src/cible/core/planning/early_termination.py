"""Early termination of sweep trials: Azure's bandit, median stopping and truncation selection.

Semantics, from Azure's HyperDrive docs (BanditPolicy, MedianStoppingPolicy,
TruncationSelectionPolicy; azureml-train-core and the CLI v2 sweep reference):

- An *interval* is one logged value of the primary metric: a trial that logged it k times has
  reached interval k (``histories[name][k - 1]`` is its value there).
- A policy applies at interval k when k is a multiple of ``evaluation_interval`` and k >=
  ``delay_evaluation`` ("the policy applies every multiple of evaluation_interval that is greater
  than or equal to delay_evaluation"; ``evaluation_interval: 0``, the SDK's unset value, means 1).
- A running trial is judged at the latest such interval it has reached, against what every trial
  (running or ended) had logged by that same interval — "when evaluating a run at interval N, its
  performance is only compared with the performance of other runs up to interval N", so a young
  trial is never cut for having run less long.
- Bandit: the reference is the best value any trial logged at interval k; a trial is cut when its
  best value up to k is outside the slack: with ``slack_factor`` f, below best/(1+f) when
  maximizing ("0.8/(1+0.2)") or above best*(1+f) when minimizing; with ``slack_amount`` a, below
  best-a or above best+a. For a negative best the factor is applied to its magnitude, so that the
  slack always widens in the direction of worse values.
- Median stopping: a trial is cut when its best value up to k is worse than the median, over all
  trials, of their running averages over intervals 1..k.
- Truncation selection: among the trials that reached interval k, ranked by their value at k, the
  worst ``truncation_percentage``% (rounded down: nothing is cut until enough trials reached k)
  are cut; of equal values the later trial counts as worse.

Only running trials are ever cut; ended trials serve as references.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence

from cible.core.models.sweeps import BanditPolicy, EarlyTermination, MedianStoppingPolicy, TruncationSelectionPolicy

PREFIX = "early termination"  # every reason starts so (the orchestrator tells a policy's cancel by it)


def terminations(policy: EarlyTermination | None, goal: str, histories: Mapping[str, Sequence[float]],
                 running: Collection[str]) -> dict[str, str]:
    """Trial name -> why the policy cancels it, for the running trials it cuts now."""
    if policy is None:
        return {}
    maximize = goal.lower() == "maximize"
    histories = {name: [v for v in values if math.isfinite(v)] for name, values in histories.items()}
    cut: dict[str, str] = {}
    for name in running:
        values = histories.get(name) or []
        interval = _interval(policy, len(values))
        if interval is None:
            continue
        if isinstance(policy, BanditPolicy):
            reason = _bandit(policy, maximize, name, histories, interval)
        elif isinstance(policy, MedianStoppingPolicy):
            reason = _median(maximize, name, histories, interval)
        elif isinstance(policy, TruncationSelectionPolicy):
            reason = _truncation(policy, maximize, name, histories, interval)
        else:  # pragma: no cover - the model's union is closed
            raise TypeError(f"unknown early termination policy {policy!r}")
        if reason:
            cut[name] = f"{PREFIX}: {reason}"
    return cut


def _interval(policy: EarlyTermination, reached: int) -> int | None:
    """The latest interval <= ``reached`` at which the policy applies, or None."""
    every = max(1, policy.evaluation_interval)
    latest = reached - reached % every
    return latest if latest >= 1 and latest >= policy.delay_evaluation else None


def _best(values: Sequence[float], maximize: bool) -> float:
    return max(values) if maximize else min(values)


def _worse(value: float, limit: float, maximize: bool) -> bool:
    """Strictly worse than ``limit``; a value at the limit up to rounding (0.8 - 0.2 vs 0.6) is not."""
    if math.isclose(value, limit, rel_tol=1e-9, abs_tol=1e-12):
        return False
    return value < limit if maximize else value > limit


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _bandit(policy: BanditPolicy, maximize: bool, name: str, histories: Mapping[str, list[float]],
            k: int) -> str | None:
    at_k = [values[k - 1] for values in histories.values() if len(values) >= k]
    reference = _best(at_k, maximize)
    mine = _best(histories[name][:k], maximize)
    if policy.slack_factor is not None:
        slack, setting = abs(reference) * policy.slack_factor, f"slack_factor {policy.slack_factor:g}"
        # "best / (1 + f)" when maximizing a positive metric: the slack is f/(1+f) of it.
        if maximize:
            slack /= 1 + policy.slack_factor
    elif policy.slack_amount is not None:
        slack, setting = policy.slack_amount, f"slack_amount {policy.slack_amount:g}"
    else:
        raise ValueError("a bandit policy needs slack_factor or slack_amount")
    threshold = reference - slack if maximize else reference + slack
    if _worse(mine, threshold, maximize):
        return (f"bandit policy ({setting}): primary metric {_fmt(mine)} at interval {k} is outside the slack of "
                f"the best {_fmt(reference)} (limit {_fmt(threshold)})")
    return None


def _median(maximize: bool, name: str, histories: Mapping[str, list[float]], k: int) -> str | None:
    averages = [statistics.fmean(values[:k]) for values in histories.values() if values]
    median = statistics.median(averages)
    mine = _best(histories[name][:k], maximize)
    if _worse(mine, median, maximize):
        return (f"median stopping policy: best primary metric {_fmt(mine)} by interval {k} is worse than the "
                f"median {_fmt(median)} of the trials' running averages")
    return None


def _truncation(policy: TruncationSelectionPolicy, maximize: bool, name: str,
                histories: Mapping[str, list[float]], k: int) -> str | None:
    reached = [(values[k - 1], order, trial) for order, (trial, values) in enumerate(histories.items())
               if len(values) >= k]
    count = len(reached) * policy.truncation_percentage // 100
    if count == 0:
        return None
    # Worst first: the lowest values when maximizing, the highest when minimizing; later trials first on ties.
    ranked = sorted(reached, key=lambda r: (r[0] if maximize else -r[0], -r[1]))
    worst = {trial for _, _, trial in ranked[:count]}
    if name in worst:
        value = histories[name][k - 1]
        return (f"truncation selection policy (truncation_percentage {policy.truncation_percentage}): primary "
                f"metric {_fmt(value)} at interval {k} is among the worst {count} of {len(reached)} trials")
    return None
