"""decide_sweep: concurrency, limits, timeout, cancel, early termination, the best trial; trial_job_spec."""

from __future__ import annotations

from cible.core.models import CommandJob, SweepJob
from cible.core.planning.sweeps import TrialView, best_trial, decide_sweep, trial_job_spec
from cible.core.specs.azureml.loader import load_spec_dict


def sweep(*, limits: dict | None = None, goal: str = "maximize", algorithm: object = "random",
          space: dict | None = None, **extra) -> SweepJob:
    data = {
        "type": "sweep", "sampling_algorithm": algorithm,
        "search_space": space or {"lr": {"type": "uniform", "min_value": 0.01, "max_value": 0.1}},
        "objective": {"goal": goal, "primary_metric": "acc"},
        "limits": limits or {"max_total_trials": 5, "max_concurrent_trials": 2},
        "trial": {"command": "python train.py --lr ${{search_space.lr}}",
                  "environment": "azureml:AzureML-sklearn-1.5@latest"},
        **extra,
    }
    return load_spec_dict(data, "job").entity


def trial(index: int, status: str = "Running", metrics: tuple[float, ...] = (), params: dict | None = None):
    return TrialView(index=index, name=f"sw_{index}", status=status, params=params or {"lr": 0.05},
                     metric_history=metrics)


def decide(spec, trials, *, elapsed_s: float = 10.0, cancel_requested: bool = False):
    return decide_sweep(spec, trials, seed_key="sw", elapsed_s=elapsed_s, cancel_requested=cancel_requested)


def test_first_pass_starts_max_concurrent_trials():
    decision = decide(sweep(), [])
    assert len(decision.new_trials) == 2
    assert all(0.01 <= p["lr"] <= 0.1 for p in decision.new_trials)
    assert (decision.cancel, decision.end, decision.error, decision.best_trial) == ({}, None, None, None)
    assert decide(sweep(), []) == decision  # the same state decides the same


def test_keeps_max_concurrent_trials_live():
    spec = sweep()
    assert decide(spec, [trial(0), trial(1, "Queued")]).new_trials == []
    decision = decide(spec, [trial(0, "Completed", (0.5,)), trial(1)])
    assert len(decision.new_trials) == 1 and decision.end is None
    # a trial being canceled still holds its slot until it has ended
    assert decide(spec, [trial(0, "CancelRequested"), trial(1)]).new_trials == []


def test_concurrency_defaults_to_the_total():
    decision = decide(sweep(limits={"max_total_trials": 7}), [trial(0, "Completed", (0.5,))])
    assert len(decision.new_trials) == 6


def test_stops_at_max_total_trials_and_completes_with_the_best():
    spec = sweep(limits={"max_total_trials": 3, "max_concurrent_trials": 3})
    trials = [trial(0, "Completed", (0.2, 0.9)), trial(1, "Failed"), trial(2)]
    decision = decide(spec, trials)
    assert decision.new_trials == [] and decision.end is None
    assert decision.best_trial == "sw_0"
    trials[2] = trial(2, "Completed", (0.5, 0.95))
    decision = decide(spec, trials)
    assert (decision.end, decision.best_trial, decision.error) == ("Completed", "sw_2", None)


def test_best_is_the_last_logged_value_by_goal_ties_to_the_lower_index():
    trials = [trial(0, "Completed", (0.9, 0.3)), trial(1, "Completed", (0.5,)), trial(2, "Completed", (0.5,)),
              trial(3, "Canceled", (0.99,)), trial(4, "Failed", (0.98,)), trial(5, "Running", (0.97,))]
    assert best_trial(sweep(), trials) == "sw_1"
    assert best_trial(sweep(goal="minimize"), trials) == "sw_0"
    assert best_trial(sweep(), trials[3:]) is None


def test_fails_when_no_trial_logged_the_metric():
    spec = sweep(limits={"max_total_trials": 2})
    decision = decide(spec, [trial(0, "Completed"), trial(1, "Failed")])
    assert decision.end == "Failed" and decision.best_trial is None
    assert decision.error == {
        "code": "NoPrimaryMetric",
        "message": "no completed trial logged the primary metric 'acc' (trials: 1 Completed, 1 Failed); a trial "
                   "logs it with mlflow.log_metric('acc', value) or an autolog that names it exactly so"}


def test_a_cancel_request_cancels_live_trials_then_ends_canceled():
    spec = sweep()
    trials = [trial(0, "Completed", (0.5,)), trial(1), trial(2, "CancelRequested")]
    decision = decide(spec, trials, cancel_requested=True)
    assert decision.cancel == {"sw_1": "the sweep was canceled"}
    assert (decision.new_trials, decision.end) == ([], None)
    trials[1:] = [trial(1, "Canceled"), trial(2, "Canceled")]
    decision = decide(spec, trials, cancel_requested=True)
    assert (decision.end, decision.error) == ("Canceled", {"code": "Canceled", "message": "the sweep was canceled"})
    assert decision.best_trial == "sw_0"


def test_the_sweep_timeout_cancels_like_a_request():
    spec = sweep(limits={"max_total_trials": 5, "timeout": 60})
    decision = decide(spec, [trial(0)], elapsed_s=59.9)
    assert decision.cancel == {} and len(decision.new_trials) == 4
    why = "the sweep reached its limits.timeout of 60 s and was canceled"
    assert decide(spec, [trial(0)], elapsed_s=60).cancel == {"sw_0": why}
    decision = decide(spec, [trial(0, "Canceled")], elapsed_s=61)
    assert (decision.end, decision.error) == ("Canceled", {"code": "SweepTimeout", "message": why})


def test_early_termination_cancels_running_trials_with_the_policy_named():
    spec = sweep(early_termination={"type": "bandit", "slack_amount": 0.1})
    trials = [trial(0, "Completed", (0.9,)), trial(1, "Running", (0.5,)), trial(2, "Running", (0.85,))]
    decision = decide(spec, trials)
    assert list(decision.cancel) == ["sw_1"]
    assert decision.cancel["sw_1"].startswith("early termination: bandit policy (slack_amount 0.1)")
    assert decision.new_trials == []  # the cut trial holds its slot until it has ended


def test_a_grid_ends_when_exhausted():
    spec = sweep(algorithm="grid", limits={"max_total_trials": 10, "max_concurrent_trials": 10},
                 space={"lr": {"type": "choice", "values": [0.01, 0.1, 1.0]}})
    decision = decide(spec, [])
    assert sorted(p["lr"] for p in decision.new_trials) == [0.01, 0.1, 1.0]
    done = [trial(i, "Completed", (v,), p) for i, (p, v) in enumerate(zip(decision.new_trials, (0.3, 0.1, 0.2)))]
    decision = decide(spec, done)
    assert (decision.new_trials, decision.end, decision.best_trial) == ([], "Completed", "sw_0")


def test_new_trials_continue_the_sampled_sequence():
    spec = sweep(limits={"max_total_trials": 4, "max_concurrent_trials": 4})
    first = decide(spec, []).new_trials
    later = decide(spec, [trial(0, "Completed", (0.1,), first[0]), trial(1, "Failed", (), first[1])]).new_trials
    assert later == first[2:]


# ---- trial_job_spec ----------------------------------------------------------------


def test_trial_job_is_a_command_job_with_the_hyperparameters_substituted():
    spec = load_spec_dict({
        "type": "sweep", "name": "sw", "experiment_name": "exp", "compute": "azureml:cpu-cluster",
        "tags": {"team": "a"}, "sampling_algorithm": "random",
        "search_space": {"lr": {"type": "uniform", "min_value": 0.01, "max_value": 0.1},
                         "flag": {"type": "choice", "values": [True, False]},
                         "words": {"type": "choice", "values": ["hello world"]}},
        "objective": {"goal": "minimize", "primary_metric": "loss"},
        "limits": {"max_total_trials": 4, "trial_timeout": 600},
        "inputs": {"A": 0.5, "data": {"type": "uri_file", "path": "https://example.com/iris.csv"}},
        "outputs": {"model": {"mode": "upload"}},
        "queue_settings": {"job_tier": "Standard"},
        "trial": {"command": "python t.py --lr ${{ search_space.lr }} --flag ${{search_space.flag}} "
                             "--w ${{search_space.words}} --a ${{inputs.A}} --d ${{inputs.data}} "
                             "--m ${{outputs.model}}",
                  "code": "cible://snapshots/" + "a" * 64,
                  "environment": {"image": "python:3.11", "conda_file": {"dependencies": ["python=3.11"]}},
                  "environment_variables": {"X": 1},
                  "distribution": {"type": "pytorch", "process_count_per_instance": 2},
                  "resources": {"instance_count": 2}},
    }, "job").entity
    job = trial_job_spec(spec, {"lr": 0.05, "flag": True, "words": "hello world"}, index=3)
    assert job["command"] == ("python t.py --lr 0.05 --flag True --w hello world --a ${{inputs.A}} "
                              "--d ${{inputs.data}} --m ${{outputs.model}}")
    assert job["inputs"] == {"A": 0.5, "data": {"type": "uri_file", "path": "https://example.com/iris.csv"}}
    assert job["outputs"] == {"model": {"mode": "upload"}}
    assert job["limits"] == {"timeout": 600}
    assert (job["compute"], job["experiment_name"], job["tags"]) == ("azureml:cpu-cluster", "exp", {"team": "a"})
    assert job["environment_variables"] == {"X": "1"}
    assert job["queue_settings"] == {"job_tier": "standard"}
    assert "name" not in job and "search_space" not in job
    child = load_spec_dict(job, "job").entity
    assert isinstance(child, CommandJob)
    assert child.resources.instance_count == 2 and child.distribution.process_count_per_instance == 2
    assert child.environment.image == "python:3.11"


def test_component_trial_takes_hyperparameters_as_inputs_and_its_defaults():
    spec = load_spec_dict({
        "type": "sweep", "sampling_algorithm": "random",
        "inputs": {"data": {"type": "uri_folder", "path": "azureml://jobs/prep/outputs/out"}, "degree": 5},
        "outputs": {"model_output": None},
        "search_space": {"c_value": {"type": "uniform", "min_value": 0.5, "max_value": 0.9},
                         "coef": {"type": "normal", "mu": 0, "sigma": 1}},
        "objective": {"goal": "minimize", "primary_metric": "training_f1_score"},
        "trial": {"type": "command", "name": "train_model", "version": "1", "is_deterministic": True,
                  "inputs": {"data": {"type": "uri_folder"}, "c_value": {"type": "number", "default": 1.0},
                             "kernel": {"type": "string", "default": "rbf"},
                             "degree": {"type": "integer", "default": 3},
                             "seed": {"type": "integer", "optional": True}},
                  "outputs": {"model_output": {"type": "mlflow_model"}, "extra": {"type": "uri_folder"}},
                  "environment": "azureml:AzureML-sklearn-1.5@latest",
                  "command": "python train.py --data ${{inputs.data}} --C ${{inputs.c_value}} "
                             "--kernel ${{inputs.kernel}} --degree ${{inputs.degree}} $[[--seed ${{inputs.seed}}]] "
                             "--coef ${{search_space.coef}} --model ${{outputs.model_output}}"},
    }, "job").entity
    job = trial_job_spec(spec, {"c_value": 0.7, "coef": -0.25}, index=0)
    assert job["inputs"] == {"c_value": 0.7, "kernel": "rbf", "degree": 5,
                             "data": {"type": "uri_folder", "path": "azureml://jobs/prep/outputs/out"}}
    assert job["outputs"] == {"model_output": {"type": "mlflow_model"}, "extra": {"type": "uri_folder"}}
    assert "--coef -0.25 " in job["command"] and "${{inputs.c_value}}" in job["command"]
    assert isinstance(load_spec_dict(job, "job").entity, CommandJob)


def test_a_sweep_whose_first_trials_all_fail_stops_with_the_first_error():
    from cible.core.planning.sweeps import FAILED_TRIALS_BEFORE_GIVING_UP, TrialView, decide_sweep
    from cible.core.specs.azureml.loader import load_spec_dict

    spec = load_spec_dict({"type": "sweep", "trial": {"command": "python t.py --x ${{search_space.x}}"},
                           "sampling_algorithm": "random", "search_space": {"x": {"type": "uniform", "min_value": 0,
                                                                                  "max_value": 1}},
                           "objective": {"goal": "minimize", "primary_metric": "loss"},
                           "limits": {"max_total_trials": 100, "max_concurrent_trials": 4}}, "job").entity
    failed = [TrialView(i, f"s_{i}", "Failed", {"x": 0.5}, (), error=f"exit {i}")
              for i in range(FAILED_TRIALS_BEFORE_GIVING_UP)]
    running = TrialView(FAILED_TRIALS_BEFORE_GIVING_UP, "s_run", "Running", {"x": 0.1}, ())
    decision = decide_sweep(spec, [*failed, running], seed_key="s", elapsed_s=1, cancel_requested=False)
    assert decision.cancel == {"s_run": "its sweep failed"} and not decision.new_trials and decision.end is None
    ended = TrialView(running.index, "s_run", "Canceled", {"x": 0.1}, ())
    decision = decide_sweep(spec, [*failed, ended], seed_key="s", elapsed_s=1, cancel_requested=False)
    assert decision.end == "Failed" and not decision.new_trials  # the trial it canceled does not revive it
    completed = TrialView(running.index, "s_run", "Completed", {"x": 0.1}, (0.3,))
    decision = decide_sweep(spec, [*failed, completed], seed_key="s", elapsed_s=1, cancel_requested=False)
    assert decision.end is None and decision.new_trials  # one trial that works: the sweep goes on

    decision = decide_sweep(spec, failed, seed_key="s", elapsed_s=1, cancel_requested=False)
    assert decision.end == "Failed" and decision.error["code"] == "TrialsFailed"
    assert "trial s_0 failed: exit 0" in decision.error["message"] and not decision.new_trials
