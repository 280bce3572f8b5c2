"""Sweep sampling through Optuna: deterministic per sweep, every distribution in its range, grids exhausted."""

from __future__ import annotations

import json
import math
import statistics
from decimal import Decimal

import pytest

from cible.core.models import SweepJob
from cible.core.planning.sampling import SampledTrial, _quantize, grid_size, sample_trials


def sweep(space: dict, algorithm: object = "random", goal: str = "maximize", **extra) -> SweepJob:
    return SweepJob.model_validate({
        "type": "sweep", "sampling_algorithm": algorithm, "search_space": space,
        "objective": {"goal": goal, "primary_metric": "acc"},
        "trial": {"command": "python train.py", "environment": "azureml:AzureML-sklearn-1.5@latest"}, **extra,
    })


EVERY_TYPE = {
    "a": {"type": "choice", "values": ["x", 2, 2.5, True]},
    "b": {"type": "randint", "upper": 4},
    "c": {"type": "uniform", "min_value": -1, "max_value": 1},
    "d": {"type": "loguniform", "min_value": -4, "max_value": 1},
    "e": {"type": "quniform", "min_value": 0, "max_value": 100, "q": 5},
    "f": {"type": "qloguniform", "min_value": 0, "max_value": 3, "q": 0.5},
    "g": {"type": "normal", "mu": 10, "sigma": 2},
    "h": {"type": "lognormal", "mu": 0, "sigma": 0.5},
    "i": {"type": "qnormal", "mu": 0, "sigma": 5, "q": 2},
    "j": {"type": "qlognormal", "mu": 1, "sigma": 0.5, "q": 0.1},
}


def multiple_of(value: float, q: float) -> bool:
    return (Decimal(repr(value)) % Decimal(repr(q))) == 0


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    return sample_trials(sweep(EVERY_TYPE, {"type": "random", "seed": 7}), [], 400)


def test_values_are_json_scalars_of_the_right_kind(samples):
    json.dumps(samples)
    for params in samples:
        assert list(params) == list(EVERY_TYPE)
        assert type(params["b"]) is int and type(params["e"]) is int and type(params["i"]) is int
        assert all(type(params[k]) is float for k in "cdfghj")


def test_every_distribution_stays_in_its_range(samples):
    column = {k: [p[k] for p in samples] for k in EVERY_TYPE}
    assert set(column["a"]) == {"x", 2, 2.5, True}
    assert set(column["b"]) == {0, 1, 2, 3}  # randint's upper bound is exclusive
    assert all(-1 <= v <= 1 for v in column["c"])
    assert all(math.exp(-4) <= v <= math.exp(1) for v in column["d"])
    # log scale: about as many below exp(-1.5) (the log midpoint) as above
    assert 120 < sum(v < math.exp(-1.5) for v in column["d"]) < 280
    assert all(0 <= v <= 100 and v % 5 == 0 for v in column["e"])
    assert all(1 <= v <= math.exp(3) + 0.25 and multiple_of(v, 0.5) for v in column["f"])
    assert 9 < statistics.fmean(column["g"]) < 11 and 1.6 < statistics.stdev(column["g"]) < 2.4
    assert all(v > 0 for v in column["h"])
    assert -0.2 < statistics.fmean(math.log(v) for v in column["h"]) < 0.2
    assert all(v % 2 == 0 for v in column["i"]) and len(set(column["i"])) > 5
    assert all(v >= 0 and multiple_of(v, 0.1) for v in column["j"])


def test_quantize_is_exact_in_decimal():
    assert _quantize(0.30000001, 0.1) == 0.3
    assert _quantize(12.6, 5) == 15 and type(_quantize(12.6, 5)) is int
    assert _quantize(-3.1, 2) == -4
    assert _quantize(7.4, 2.0) == 8 and type(_quantize(7.4, 2.0)) is int


SPACE = {"lr": {"type": "uniform", "min_value": 0.001, "max_value": 0.1},
         "depth": {"type": "choice", "values": [2, 4, 8, 16]}}


def history(params_list, values=None):
    return [SampledTrial(p, None if values is None else values[i], "running" if values is None else "complete")
            for i, p in enumerate(params_list)]


@pytest.mark.parametrize("algorithm", ["random", {"type": "random", "rule": "sobol"}, "bayesian"])
def test_same_spec_and_history_sample_the_same(algorithm):
    spec = sweep(SPACE, algorithm)
    first = sample_trials(spec, [], 3, seed_key="sweep-1")
    assert first == sample_trials(spec, [], 3, seed_key="sweep-1")
    done = history(first, [0.5, 0.7, 0.6])
    assert sample_trials(spec, done, 2, seed_key="sweep-1") == sample_trials(spec, done, 2, seed_key="sweep-1")
    assert len({json.dumps(p, sort_keys=True) for p in first}) == 3


def test_a_random_trial_depends_on_its_index_only():
    spec = sweep(SPACE)
    together = sample_trials(spec, [], 4, seed_key="s")
    one_by_one: list[dict] = []
    for _ in range(4):
        one_by_one += sample_trials(spec, history(one_by_one), 1, seed_key="s")
    assert together == one_by_one
    assert sample_trials(spec, history(together[:2], [0.1, 0.9]), 2, seed_key="s") == together[2:]


def test_the_seed_comes_from_the_spec_else_from_the_sweep_name():
    unseeded = sweep(SPACE)
    assert sample_trials(unseeded, [], 2, seed_key="a") != sample_trials(unseeded, [], 2, seed_key="b")
    seeded = sweep(SPACE, {"type": "random", "seed": 3})
    assert sample_trials(seeded, [], 2, seed_key="a") == sample_trials(seeded, [], 2, seed_key="b")
    assert sample_trials(seeded, [], 2) != sample_trials(sweep(SPACE, {"type": "random", "seed": 4}), [], 2)


def test_sobol_points_cover_the_space_evenly():
    spec = sweep({"x": {"type": "uniform", "min_value": 0, "max_value": 1}}, {"type": "random", "rule": "sobol"})
    points = [p["x"] for p in sample_trials(spec, [], 16, seed_key="s")]
    # a scrambled Sobol sequence puts exactly one of its first 16 points in each sixteenth
    assert sorted(int(x * 16) for x in points) == list(range(16))


def test_grid_visits_every_point_once_then_stops():
    spec = sweep({"a": {"type": "choice", "values": [1, 2, 3]}, "b": {"type": "choice", "values": ["x", "y"]}},
                 "grid")
    assert grid_size(spec) == 6 and grid_size(sweep(SPACE)) is None
    seen: list[dict] = []
    batch = sample_trials(spec, [], 4, seed_key="g")
    assert len(batch) == 4
    seen += batch
    rest = sample_trials(spec, [SampledTrial(p, None, "failed") for p in seen], 4, seed_key="g")
    assert len(rest) == 2  # fewer than asked: the grid is exhausted
    seen += rest
    assert sorted((p["a"], p["b"]) for p in seen) == [(a, b) for a in (1, 2, 3) for b in ("x", "y")]
    assert sample_trials(spec, history(seen), 3, seed_key="g") == []
    assert sample_trials(spec, [], 0) == []


def test_bayesian_learns_from_the_history():
    spec = sweep({"x": {"type": "uniform", "min_value": 0, "max_value": 10},
                  "kind": {"type": "choice", "values": ["good", "bad"]}}, "bayesian", goal="minimize")
    done: list[SampledTrial] = []
    for _ in range(30):
        params = sample_trials(spec, done, 1, seed_key="tpe")[0]
        done.append(SampledTrial(params, abs(params["x"] - 3) + (params["kind"] == "bad") * 5, "complete"))
    late = done[-10:]
    assert sum(t.params["kind"] == "good" for t in late) >= 7
    assert statistics.median(abs(t.params["x"] - 3) for t in late) < 2


def test_history_of_every_state_and_unfit_values_is_accepted():
    spec = sweep(EVERY_TYPE, "random")
    odd = [
        SampledTrial({"a": "not-a-choice", "b": 99, "c": 5.0, "d": -1.0, "h": 0.0}, 0.3, "complete"),
        SampledTrial({"a": "x"}, None, "failed"),
        SampledTrial({"a": 2, "g": 1e9}, 0.1, "pruned"),
        SampledTrial({}, None, "running"),
        SampledTrial({"a": True}, float("nan"), "complete"),
    ]
    assert len(sample_trials(spec, odd, 2, seed_key="x")) == 2
    tpe = sweep({"c": {"type": "uniform", "min_value": 0, "max_value": 1}}, "bayesian")
    tpe_history = odd + [SampledTrial({"c": i / 20}, i / 20, "complete") for i in range(12)]
    assert 0 <= sample_trials(tpe, tpe_history, 1)[0]["c"] <= 1
