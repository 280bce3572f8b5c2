"""The `ray` provider's view of each node as a state machine: the transition table
(core/lifecycle/ray_nodes.py) and the provider moving its records through it from what Ray
shows, with a history entry per move. Ray is never reached: what the node actors answer is
handed to the provider's `_observe` as a refresh would, and stopping a node on Ray is
replaced by a recorder (its completion is `_stopped`)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cible.backends.base.contract import NodeRequest, ProviderNode
from cible.backends.ray.provider import RayNodeProvider
from cible.core.errors import InvalidTransitionError
from cible.core.lifecycle.ray_nodes import (
    INITIAL, LEAVING, PENDING, TRANSITIONS, RayNodeState, can_transition, check_transition,
)
from cible.testing import FrozenClock

S = RayNodeState
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)

# -- the table --------------------------------------------------------------------------------------


def test_every_state_has_its_moves_and_gone_is_the_only_end():
    assert set(TRANSITIONS) == set(RayNodeState)
    assert [s for s, moves in TRANSITIONS.items() if not moves] == [S.GONE]


def test_every_state_but_gone_can_end_gone():
    for state in set(RayNodeState) - {S.GONE}:
        assert can_transition(state, S.GONE), state


@pytest.mark.parametrize(("source", "target"), [
    (S.GONE, S.RUNNING),  # a gone node does not come back (a new launch is a new record)
    (S.PREEMPTED, S.RUNNING),
    (S.PREEMPTED, S.STOPPING),  # an evicted node stays listed as preempted until it is gone
    (S.STOPPING, S.RUNNING),
    (S.EXITED, S.RUNNING),  # an agent that ended does not start again in the same actor
    (S.RUNNING, S.PLACING),
    (S.STARTING, S.QUEUED),
])
def test_moves_the_table_refuses(source: RayNodeState, target: RayNodeState):
    assert not can_transition(source, target)
    with pytest.raises(InvalidTransitionError, match=f"from {source.value} to {target.value}"):
        check_transition(source, target)


def test_a_record_starts_only_in_an_initial_state():
    for state in INITIAL:
        check_transition(None, state)
    with pytest.raises(InvalidTransitionError, match="cannot start in placing"):
        check_transition(None, S.PLACING)
    assert PENDING | LEAVING | {S.RUNNING, S.EXITED, S.GONE} == set(RayNodeState)


# -- the provider's moves ---------------------------------------------------------------------------


def request(node_id: str, compute: str = "cpu") -> NodeRequest:
    return NodeRequest(node_id=node_id, compute=compute, size="Standard_DS1_v2", vcpus=1, memory_gb=3.5)


def up(ip: str = "10.0.0.2", machine: str = "m1", compute: str = "cpu") -> dict:
    return {"exit_code": None, "ip": ip, "ray_node_id": machine, "compute": compute}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, node_id: str, evict: bool) -> None:
        self.calls.append((node_id, evict))


@pytest.fixture
def provider(tmp_path: Path) -> RayNodeProvider:
    p = RayNodeProvider("10.0.0.1:6379", nodes_root=tmp_path / "ws" / "nodes", home=tmp_path / "ws", url=None,
                        node_token=lambda n: "t", clock=FrozenClock(NOW))
    p._placers.add("cpu")  # no placing thread: the test moves the nodes itself
    p._stop = Recorder()  # stopping on Ray is recorded; `_stopped` completes it
    p._seen_once = True
    return p


def observe(provider: RayNodeProvider, infos: dict[str, dict], dead: dict[str, str] | None = None) -> list[str]:
    with provider._lock:
        return provider._observe(infos, dead or {})


def states(provider: RayNodeProvider, node_id: str) -> list[tuple[str | None, str]]:
    return [(c.source and c.source.value, c.target.value) for c in provider.history(node_id)]


def test_a_launched_node_is_queued_once_with_its_history(provider: RayNodeProvider):
    provider.launch([request("a")])
    provider.launch([request("a")])  # idempotent
    assert provider._nodes["a"].state is S.QUEUED and provider._queue["cpu"] == ["a"]
    [change] = provider.history("a")
    assert (change.at, change.source, change.target, change.reason) == (NOW, None, S.QUEUED, "launched")
    assert provider.list_nodes() == {"a": ProviderNode("a")}


def test_a_node_answering_runs_then_stops_itself(provider: RayNodeProvider):
    provider.launch([request("a")])
    with provider._lock:
        provider._move(provider._nodes["a"], S.PLACING, "its turn")
        provider._move(provider._nodes["a"], S.STARTING, "made")
    assert observe(provider, {"a": up()}) == []
    assert provider.list_nodes() == {"a": ProviderNode("a", address="10.0.0.2")}
    observe(provider, {"a": {**up(), "exit_code": 0, "stopped_itself": "idle"}})
    assert provider.list_nodes() == {"a": ProviderNode("a", alive=False, stopped_itself="idle")}
    assert states(provider, "a") == [(None, "queued"), ("queued", "placing"), ("placing", "starting"),
                                     ("starting", "running"), ("running", "exited")]
    assert provider.poll_errors() == {}


def test_a_crashed_agent_is_reported_and_its_node_stopped(provider: RayNodeProvider):
    observe(provider, {"a": up()})  # found on Ray (a restarted server)
    assert states(provider, "a") == [(None, "running")]
    crashed = observe(provider, {"a": {**up(), "exit_code": 3, "log_tail": "boom"}})
    assert crashed == ["a"]
    assert provider.poll_errors() == {"a": "its agent exited with code 3: boom"}
    assert provider.list_nodes() == {}  # a crash is not listed: it is reported, then stopped
    provider.terminate(crashed)
    assert provider._nodes["a"].state is S.STOPPING and provider._stop.calls == [("a", False)]


def test_a_node_whose_actor_vanishes_is_lost_saying_why(provider: RayNodeProvider):
    observe(provider, {"a": up(), "b": up("10.0.0.3", "m2")})
    observe(provider, {"b": up("10.0.0.3", "m2")})
    assert provider._nodes["a"].state is S.GONE
    assert provider.poll_errors() == {"a": "its Ray node or actor was lost: its Ray actor is gone"}
    assert list(provider.list_nodes()) == ["b"]


def test_an_actor_that_dies_before_answering_is_reported(provider: RayNodeProvider):
    provider.launch([request("a")])
    with provider._lock:
        provider._move(provider._nodes["a"], S.PLACING, "its turn")
        provider._move(provider._nodes["a"], S.STARTING, "made")
    observe(provider, {}, dead={"a": "the actor died unexpectedly"})
    assert provider.poll_errors() == {"a": "its Ray actor died before it was ready: the actor died unexpectedly"}
    assert provider.list_nodes() == {}


def test_a_terminated_node_goes_without_an_error_and_terminate_is_idempotent(provider: RayNodeProvider):
    observe(provider, {"a": up()})
    provider.terminate(["a"])
    provider.terminate(["a"])  # already stopping: not stopped twice
    assert provider._stop.calls == [("a", False)]
    assert provider.list_nodes() == {"a": ProviderNode("a", address="10.0.0.2")}  # listed until it is gone
    observe(provider, {})  # its actor went: no loss
    assert provider.poll_errors() == {} and provider.list_nodes() == {}
    provider._stopped("a", evict=False)
    observe(provider, {"a": up()})  # a late answer from before it was stopped changes nothing
    assert provider._nodes["a"].state is S.GONE and provider.list_nodes() == {}
    assert states(provider, "a")[-2:] == [("running", "stopping"), ("stopping", "gone")]


def test_terminating_a_node_never_seen_cleans_up_without_listing_it(provider: RayNodeProvider):
    provider.terminate(["ghost"])
    assert provider._stop.calls == [("ghost", False)] and provider.list_nodes() == {}
    provider._stopped("ghost", evict=False)
    assert states(provider, "ghost") == [(None, "stopping"), ("stopping", "gone")]


def test_a_preempted_node_is_listed_as_such_until_terminated(provider: RayNodeProvider):
    observe(provider, {"a": up()})
    provider.preempt("a")
    provider.preempt("a")  # once
    assert provider._stop.calls == [("a", True)]
    evicted = {"a": ProviderNode("a", alive=False, preempted=True)}
    assert provider.list_nodes() == evicted
    provider._stopped("a", evict=True)
    observe(provider, {})
    assert provider.list_nodes() == evicted and provider.poll_errors() == {}
    provider.terminate(["a"])
    assert provider._stop.calls[-1] == ("a", False) and provider.list_nodes() == evicted
    provider._stopped("a", evict=False)
    assert provider.list_nodes() == {}
    assert [t for _, t in states(provider, "a")] == ["running", "preempted", "gone"]


def test_a_node_stopped_before_its_turn_is_never_placed(provider: RayNodeProvider):
    provider.launch([request("a"), request("b")])
    provider.terminate(["a"])
    provider._placers.discard("cpu")
    placed = []
    provider._place = lambda compute, node: placed.append(node.node_id)  # type: ignore[method-assign]
    provider._place_all("cpu")
    assert placed == ["b"] and provider._nodes["b"].state is S.PLACING


def test_a_launch_after_the_node_went_is_a_new_record_with_the_old_history(provider: RayNodeProvider):
    observe(provider, {"a": up()})
    provider.terminate(["a"])
    provider._stopped("a", evict=False)
    provider.launch([request("a")])
    assert provider._nodes["a"].state is S.QUEUED
    assert [t for _, t in states(provider, "a")] == ["running", "stopping", "gone", "queued"]


def test_a_move_the_table_refuses_raises_and_changes_nothing(provider: RayNodeProvider):
    observe(provider, {"a": up()})
    node = provider._nodes["a"]
    with provider._lock, pytest.raises(InvalidTransitionError):
        provider._move(node, S.PLACING, "wrong")
    assert node.state is S.RUNNING and len(node.history) == 1


def test_each_move_is_logged(provider: RayNodeProvider, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="cible.provider.ray"):
        observe(provider, {"a": up()})
        provider.terminate(["a"])
    assert "ray node a: running (its actor was found on Ray)" in caplog.text
    assert "ray node a: running -> stopping (terminate asked)" in caplog.text


def test_the_compute_machines_are_those_its_nodes_hold(provider: RayNodeProvider):
    observe(provider, {"a": up(machine="m1"), "x": up(machine="m9", compute="other")})
    provider.launch([request("b")])
    with provider._lock:
        provider._move(provider._nodes["b"], S.PLACING, "its turn")
        provider._nodes["b"].machine = "m2"
        provider._move(provider._nodes["b"], S.STARTING, "made")
    assert provider._machines_of("cpu") == {"m1", "m2"}
    provider.preempt("a")
    provider._stopped("a", evict=True)  # its machine is free again
    assert provider._machines_of("cpu") == {"m2"}
