"""Hyperparameter sampling for sweeps, through Optuna's samplers.

Azure's algorithms map onto Optuna's: ``random`` -> RandomSampler (``rule: sobol`` -> QMCSampler
with a scrambled Sobol sequence), ``grid`` -> GridSampler, ``bayesian`` -> TPESampler.

The function is pure: every call rebuilds an in-memory study from the trials so far, so a server
restart (or any pass) with the same spec and history samples the same parameters. The seed of new
trial ``i`` is derived from the sweep's seed (or, without one, from ``seed_key``, the sweep's name)
and ``i``; a random trial's parameters therefore depend on nothing else, and a Bayesian trial's on
the history it was sampled after.

Azure's parameter types become Optuna distributions (the sampler works in that space) and back:
``choice`` -> categorical, ``randint`` -> int 0..upper-1, ``uniform`` -> float, ``loguniform`` ->
float exp(min)..exp(max) on a log scale; the q-variants sample the continuous one and round to a
multiple of q (hyperopt's definition, which Azure's docs give); ``normal`` and ``lognormal`` sample
a quantile in (0, 1) that the normal distribution's inverse CDF turns into the value (then exp).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Mapping, Sequence
from decimal import Decimal
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from cible.core.models.sweeps import (
    Choice,
    LogNormal,
    LogUniform,
    Normal,
    QLogNormal,
    QLogUniform,
    QNormal,
    QUniform,
    RandInt,
    RandomSampling,
    SweepJob,
    Uniform,
)

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.samplers import BaseSampler
    from optuna.study import Study

TrialState = Literal["complete", "running", "failed", "pruned"]
# A quantile of exactly 0 or 1 is an infinite normal sample: keep the sampler's quantiles inside.
_QUANTILE_EPS = 1e-12


class SampledTrial(NamedTuple):
    """One trial of the sweep so far, as the sampler sees it.

    ``state``: "complete" (``value`` is its primary metric), "running", "failed" (no metric: the
    sampler only avoids repeating it), or "pruned" (ended early, ``value`` its last metric).
    """

    params: Mapping[str, Any]
    value: float | None
    state: TrialState


def grid_size(spec: SweepJob) -> int | None:
    """How many points a grid sweep has (the product of its choices' sizes); None for other algorithms."""
    if spec.sampling_algorithm.type != "grid":
        return None
    return math.prod(len(p.values) for p in spec.search_space.values())  # type: ignore[union-attr]


def base_seed(spec: SweepJob, seed_key: str = "") -> int:
    """The sweep's seed: its ``sampling_algorithm.seed``, else one derived from ``seed_key``."""
    seed = spec.sampling_algorithm.seed if isinstance(spec.sampling_algorithm, RandomSampling) else None
    return _hash_int(f"seed:{seed}" if seed is not None else f"key:{seed_key}")


def trial_seed(base: int, index: int) -> int:
    return _hash_int(f"{base}/{index}")


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")  # numpy takes < 2**32


def sample_trials(spec: SweepJob, history: Sequence[SampledTrial], count: int, *,
                  seed_key: str = "") -> list[dict[str, Any]]:
    """Up to ``count`` new parameter sets, for trials ``len(history)``, ``len(history) + 1`` ...

    ``history`` lists every trial created so far, in index order (trial ``i`` is ``history[i]``).
    Fewer than ``count`` come back only when a grid has no point left. Values are JSON scalars.
    """
    if count <= 0:
        return []
    algorithm = spec.sampling_algorithm.type
    first = len(history)
    if algorithm == "grid":
        count = min(count, max(0, (grid_size(spec) or 0) - first))
        if count == 0:
            return []
    optuna = _optuna()
    distributions = {name: _distribution(p) for name, p in spec.search_space.items()}
    base = base_seed(spec, seed_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(direction="maximize" if spec.objective.goal == "maximize" else "minimize",
                                    sampler=_sampler(spec, base, first))
        grid = algorithm == "grid"
        for number, past in enumerate(history):
            study.add_trial(_frozen(optuna, spec, past, distributions, grid_search_space(spec) if grid else None,
                                    number))
        sampled = []
        for offset in range(count):
            index = first + offset
            if not grid and offset:  # a sampler of its own per trial: its draw depends on its index
                study.sampler = _sampler(spec, base, index)
            trial = study.ask(fixed_distributions=distributions)
            sampled.append({name: _external(spec.search_space[name], trial.params[name]) for name in distributions})
    return sampled


def grid_search_space(spec: SweepJob) -> dict[str, list[Any]]:
    return {name: list(p.values) for name, p in spec.search_space.items()}  # type: ignore[union-attr]


# ---- Optuna ---------------------------------------------------------------------------


def _optuna() -> Any:
    """Optuna, imported on first use (the CLI and server start without it), quiet on stderr."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _sampler(spec: SweepJob, base: int, index: int) -> BaseSampler:
    optuna = _optuna()
    algorithm = spec.sampling_algorithm
    if algorithm.type == "grid":
        return optuna.samplers.GridSampler(grid_search_space(spec), seed=base)
    if algorithm.type == "bayesian":
        # constant_liar: trials still running count as bad guesses, so concurrent trials spread out.
        return optuna.samplers.TPESampler(seed=trial_seed(base, index), constant_liar=True)
    if isinstance(algorithm, RandomSampling) and algorithm.rule == "sobol":
        return _indexed_sobol(optuna)(index=index, space={n: _distribution(p) for n, p in spec.search_space.items()},
                                      seed=base)
    return optuna.samplers.RandomSampler(seed=trial_seed(base, index))


def _indexed_sobol(optuna: Any) -> type:
    class IndexedSobolSampler(optuna.samplers.QMCSampler):
        """Point ``index`` of the sweep's scrambled Sobol sequence.

        QMCSampler counts the points it has drawn in the study's system attributes, which a study
        rebuilt each pass would restart from 0; the trial index is that count. The search space is
        the sweep's from the first trial on (QMCSampler would draw trial 0 at random).
        """

        def __init__(self, *, index: int, space: dict[str, BaseDistribution], seed: int) -> None:
            super().__init__(qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False)
            self._index = index
            self._space = space

        def infer_relative_search_space(self, study: Study, trial: Any) -> dict[str, BaseDistribution]:
            return dict(self._space)

        def _find_sample_id(self, study: Study, search_space: dict[str, BaseDistribution]) -> int:
            return self._index

    return IndexedSobolSampler


def _distribution(parameter: Any) -> BaseDistribution:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(parameter, Choice):
        return CategoricalDistribution(parameter.values)
    if isinstance(parameter, RandInt):
        return IntDistribution(0, parameter.upper - 1)
    if isinstance(parameter, (Uniform, QUniform)):
        return FloatDistribution(parameter.min_value, parameter.max_value)
    if isinstance(parameter, (LogUniform, QLogUniform)):
        return FloatDistribution(math.exp(parameter.min_value), math.exp(parameter.max_value), log=True)
    return FloatDistribution(0.0, 1.0)  # the normal family: a quantile


def _external(parameter: Any, internal: Any) -> Any:
    """The Azure value of a hyperparameter from the sampler's."""
    if isinstance(parameter, Choice):
        return internal
    if isinstance(parameter, RandInt):
        return int(internal)
    value = float(internal)
    if isinstance(parameter, (Normal, QNormal, LogNormal, QLogNormal)):
        quantile = min(max(value, _QUANTILE_EPS), 1 - _QUANTILE_EPS)
        value = NormalDist(parameter.mu, parameter.sigma).inv_cdf(quantile)
        if isinstance(parameter, (LogNormal, QLogNormal)):
            value = math.exp(value)
    q = getattr(parameter, "q", None)
    return _quantize(value, q) if q is not None else value


def _quantize(value: float, q: float) -> float | int:
    """round(value / q) * q, exact in decimal (0.1 * 3 is 0.3), an int when q and the result are whole."""
    steps = round(value / q)
    if float(q).is_integer():
        return int(steps * int(q))
    return float(Decimal(repr(float(q))) * steps)


def _internal(parameter: Any, value: Any) -> Any:
    """The sampler's value for an Azure value of an earlier trial; ValueError when it cannot be one."""
    if isinstance(parameter, Choice):
        if value not in parameter.values:
            raise ValueError(value)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(value)
    if isinstance(parameter, RandInt):
        if not (isinstance(value, int) or float(value).is_integer()) or not 0 <= value < parameter.upper:
            raise ValueError(value)
        return int(value)
    if isinstance(parameter, (Uniform, QUniform)):
        return min(max(float(value), parameter.min_value), parameter.max_value)
    if isinstance(parameter, (LogUniform, QLogUniform)):
        low, high = math.exp(parameter.min_value), math.exp(parameter.max_value)
        return min(max(float(value), low), high)
    if isinstance(parameter, (LogNormal, QLogNormal)):
        if value <= 0:
            return 0.0
        value = math.log(value)
    return NormalDist(parameter.mu, parameter.sigma).cdf(float(value))


def _frozen(optuna: Any, spec: SweepJob, past: SampledTrial, distributions: dict[str, BaseDistribution],
            grid: dict[str, list[Any]] | None, number: int) -> Any:
    """An Optuna trial for an earlier one; parameters that no longer fit are left out of it."""
    from optuna.trial import TrialState as State

    params, used = {}, {}
    for name, parameter in spec.search_space.items():
        if name in past.params:
            try:
                params[name] = _internal(parameter, past.params[name])
            except ValueError:
                continue
            used[name] = distributions[name]
    value = past.value if past.value is not None and math.isfinite(past.value) else None
    state = {"complete": State.COMPLETE, "running": State.RUNNING, "pruned": State.PRUNED}.get(past.state, State.FAIL)
    if state in (State.COMPLETE, State.PRUNED) and value is None:
        state = State.FAIL  # ended without the metric: nothing to learn but "not here again"
    # GridSampler gives trial n the n-th point of its (seeded) shuffled grid; the earlier trials
    # say so themselves, so the grid's unvisited points are the ones after them.
    system_attrs = {"search_space": grid, "grid_id": number} if grid is not None else None
    return optuna.trial.create_trial(
        state=state, params=params, distributions=used, system_attrs=system_attrs,
        value=value if state == State.COMPLETE else None,
        intermediate_values={0: value} if state == State.PRUNED else None,
    )
