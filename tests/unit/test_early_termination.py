"""Early termination policies over intermediate metric values, at their boundaries."""

from __future__ import annotations

import pytest

from cible.core.models.sweeps import BanditPolicy, MedianStoppingPolicy, TruncationSelectionPolicy
from cible.core.planning.early_termination import terminations


def bandit(**kwargs) -> BanditPolicy:
    return BanditPolicy(type="bandit", **kwargs)


def test_no_policy_cuts_nothing():
    assert terminations(None, "maximize", {"t1": [0.0]}, {"t1"}) == {}


def test_bandit_factor_when_maximizing_is_best_over_one_plus_factor():
    # Azure's example: best 0.8 at the interval, slack_factor 0.2 -> anything below 0.8/1.2 is cut.
    policy = bandit(slack_factor=0.2)
    histories = {"best": [0.8], "kept": [0.6667], "cut": [0.6666]}
    cut = terminations(policy, "maximize", histories, {"best", "kept", "cut"})
    assert list(cut) == ["cut"]
    assert cut["cut"] == ("early termination: bandit policy (slack_factor 0.2): primary metric 0.6666 at interval 1 "
                          "is outside the slack of the best 0.8 (limit 0.666667)")


def test_bandit_factor_when_minimizing_is_best_times_one_plus_factor():
    policy = bandit(slack_factor=0.1)
    histories = {"best": [0.5], "kept": [0.55], "cut": [0.5501]}
    assert set(terminations(policy, "minimize", histories, set(histories))) == {"cut"}


def test_bandit_amount_is_an_absolute_distance():
    policy = bandit(slack_amount=0.2)
    histories = {"best": [0.8], "kept": [0.6], "cut": [0.5999]}
    assert set(terminations(policy, "Maximize", histories, set(histories))) == {"cut"}
    histories = {"best": [1.0], "kept": [1.2], "cut": [1.2001]}
    assert set(terminations(policy, "minimize", histories, set(histories))) == {"cut"}


def test_bandit_slack_widens_toward_worse_values_for_negative_metrics():
    policy = bandit(slack_factor=0.1)
    # maximizing, best -1.0: the limit is -1.0 - 0.1/1.1, and the best itself is never cut
    histories = {"best": [-1.0], "kept": [-1.09], "cut": [-1.1]}
    assert set(terminations(policy, "maximize", histories, set(histories))) == {"cut"}
    histories = {"best": [-1.0], "kept": [-0.9], "cut": [-0.89]}
    assert set(terminations(policy, "minimize", histories, set(histories))) == {"cut"}


def test_bandit_compares_with_the_best_value_at_the_same_interval():
    policy = bandit(slack_amount=0.1)
    # "old" reached 0.9 only at interval 3; "young" at interval 1 is compared with what was logged at 1.
    histories = {"old": [0.5, 0.7, 0.9], "young": [0.45]}
    assert terminations(policy, "maximize", histories, {"young"}) == {}
    histories["young"] = [0.45, 0.5, 0.7]
    assert set(terminations(policy, "maximize", histories, {"young"})) == {"young"}
    # its best value so far counts, not only its latest: 0.85 is just within 0.95 - 0.1
    young = [0.45, 0.5, 0.85, 0.6]
    assert terminations(policy, "maximize", {"old": [0.5, 0.7, 0.9, 0.95], "young": young}, {"young"}) == {}
    cut = terminations(policy, "maximize", {"old": [0.5, 0.7, 0.9, 0.96], "young": young}, {"young"})
    assert "primary metric 0.85 at interval 4 is outside the slack of the best 0.96" in cut["young"]


def test_only_running_trials_are_cut():
    policy = bandit(slack_amount=0.0)
    histories = {"best": [1.0], "ended": [0.1], "running": [0.2]}
    assert set(terminations(policy, "maximize", histories, {"best", "running"})) == {"running"}
    assert terminations(policy, "maximize", histories, {"queued-without-metrics"}) == {}


@pytest.mark.parametrize(("every", "delay", "judged_at"), [
    (1, 0, [1, 2, 3, 4, 5, 6]),
    (2, 0, [2, 4, 6]),
    (1, 3, [3, 4, 5, 6]),
    (2, 3, [4, 6]),  # multiples of evaluation_interval that are >= delay_evaluation
    (0, 0, [1, 2, 3, 4, 5, 6]),  # the SDK's unset 0 means every interval
    (4, 5, []),
])
def test_intervals_where_a_policy_applies(every, delay, judged_at):
    policy = bandit(slack_amount=0.0, evaluation_interval=every, delay_evaluation=delay)
    applied = []
    for reached in range(1, 7):
        # the reference is better only at interval `reached`: a cut there means the policy applied there
        histories = {"ref": [0.0] * (reached - 1) + [1.0], "trial": [0.5] * reached}
        cut = terminations(policy, "maximize", histories, {"trial"})
        if cut:
            applied.append(reached)
    assert applied == judged_at


def test_median_stopping_cuts_a_best_worse_than_the_median_of_running_averages():
    policy = MedianStoppingPolicy(type="median_stopping")
    # running averages over intervals 1..2: 0.5, 0.6, 0.7, 0.8 and mine 0.545 -> median 0.6; mine's best 0.59
    histories = {"a": [0.4, 0.6], "b": [0.5, 0.7], "c": [0.7, 0.7], "e": [0.8, 0.8], "mine": [0.5, 0.59]}
    cut = terminations(policy, "maximize", histories, set(histories))
    assert set(cut) == {"mine"}
    assert cut["mine"] == ("early termination: median stopping policy: best primary metric 0.59 by interval 2 is "
                           "worse than the median 0.6 of the trials' running averages")
    # a best equal to the median is kept
    histories["mine"] = [0.5, 0.6]
    assert terminations(policy, "maximize", histories, set(histories)) == {}


def test_median_stopping_uses_each_trials_values_up_to_the_interval_only():
    policy = MedianStoppingPolicy(type="median_stopping", delay_evaluation=2)
    histories = {"a": [1.0, 1.0, 9.0, 9.0], "b": [1.0, 1.0, 9.0], "mine": [2.0, 1.5]}
    # at interval 2 the averages are 1.0, 1.0, 1.75 -> median 1.0; minimizing, mine's best 1.5 is worse
    assert set(terminations(policy, "minimize", histories, {"mine"})) == {"mine"}
    assert terminations(policy, "maximize", histories, {"mine"}) == {}
    assert terminations(policy, "minimize", {"a": [1.0], "mine": [2.0]}, {"mine"}) == {}  # before the delay


def test_truncation_cuts_the_worst_percentage_at_an_interval():
    policy = TruncationSelectionPolicy(type="truncation_selection", truncation_percentage=20)
    histories = {f"t{i}": [v] for i, v in enumerate([0.5, 0.1, 0.9, 0.7, 0.3])}
    cut = terminations(policy, "maximize", histories, set(histories))
    assert list(cut) == ["t1"]
    assert cut["t1"] == ("early termination: truncation selection policy (truncation_percentage 20): primary metric "
                         "0.1 at interval 1 is among the worst 1 of 5 trials")
    assert set(terminations(policy, "minimize", histories, set(histories))) == {"t2"}
    # 20% of 4 trials is less than one: nothing is cut until enough trials reached the interval
    del histories["t4"]
    assert terminations(policy, "maximize", histories, set(histories)) == {}


def test_truncation_counts_ended_trials_and_cuts_only_running_ones():
    policy = TruncationSelectionPolicy(type="truncation_selection", truncation_percentage=40)
    histories = {"a": [0.1], "b": [0.2], "c": [0.3], "d": [0.4], "e": [0.5]}
    assert set(terminations(policy, "maximize", histories, {"b", "c", "d"})) == {"b"}


def test_truncation_ties_count_the_later_trial_as_worse():
    policy = TruncationSelectionPolicy(type="truncation_selection", truncation_percentage=50)
    histories = {"first": [0.5], "second": [0.5], "third": [0.9], "fourth": [0.9]}
    assert set(terminations(policy, "maximize", histories, set(histories))) == {"first", "second"}
    histories = {"first": [0.5], "second": [0.5], "third": [0.9]}
    assert set(terminations(policy, "maximize", histories, set(histories))) == {"second"}


def test_truncation_compares_trials_at_the_same_interval():
    policy = TruncationSelectionPolicy(type="truncation_selection", truncation_percentage=50)
    # "young" is at interval 1 (0.2) and is compared with the others' interval-1 values, not their later ones
    histories = {"a": [0.1, 0.9], "b": [0.15, 0.95], "young": [0.2]}
    assert terminations(policy, "maximize", histories, {"young"}) == {}


def test_non_finite_values_are_left_out():
    policy = bandit(slack_amount=0.1)
    histories = {"ref": [float("nan")], "t": [0.5]}
    assert terminations(policy, "maximize", histories, {"t"}) == {}
