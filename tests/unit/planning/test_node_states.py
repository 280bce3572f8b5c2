from __future__ import annotations

import pytest

from cible.core.errors import InvalidTransitionError
from cible.core.lifecycle.nodes import LIVE, TRANSITIONS, NodeState, can_transition, check_transition, is_live

N = NodeState


def test_every_state_has_a_row_and_the_names_are_azures():
    assert set(TRANSITIONS) == set(NodeState)
    azure = {"preparing", "idle", "running", "leaving", "preempted", "unusable"}
    assert {s.value for s in NodeState} == azure | {"removed"}


def test_removed_is_the_only_terminal_state_and_every_state_reaches_it():
    assert [s for s, targets in TRANSITIONS.items() if not targets] == [N.REMOVED]
    for state in NodeState:
        if state != N.REMOVED:
            assert can_transition(state, N.REMOVED)


def test_live_states_are_the_ones_that_count_toward_max():
    assert LIVE == {N.PREPARING, N.IDLE, N.RUNNING}
    assert is_live("idle") and not is_live("leaving")


def test_a_busy_node_is_never_scaled_away_mid_job():
    with pytest.raises(InvalidTransitionError) as info:
        check_transition(N.RUNNING, N.LEAVING)
    assert "running" in info.value.message and "leaving" in info.value.message
    check_transition(N.RUNNING, N.IDLE)
    check_transition(N.IDLE, N.LEAVING)


def test_an_unusable_node_does_not_come_back():
    assert TRANSITIONS[N.UNUSABLE] == {N.REMOVED}
    with pytest.raises(InvalidTransitionError):
        check_transition(N.UNUSABLE, N.IDLE)


def test_terminal_message_says_so():
    with pytest.raises(InvalidTransitionError) as info:
        check_transition("removed", "idle")
    assert "terminal" in info.value.message
    assert info.value.details == {"from": "removed", "to": "idle"}
