"""Durations from stored settings are clamped before they meet a datetime: an idle time of 10^29 s
(or a JSON integer too large for a float, or NaN) means "practically never", never an
OverflowError that would stop every pass of the reconciler planning with it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from cluster_factories import cfg, node

from cible.core.lifecycle.nodes import NodeState
from cible.core.planning.clusters import decide_cluster
from cible.core.planning.durations import MAX_SPAN_S, span
from cible.core.planning.instances import InstanceView, idleness
from cible.testing import FrozenClock

ABSURD = [10**29, 10**400, float("inf"), float("nan"), 1e300]


@pytest.mark.parametrize("seconds", ABSURD)
def test_an_absurd_duration_is_the_longest_span(seconds: float):
    assert span(seconds) == timedelta(seconds=MAX_SPAN_S)
    assert datetime.max.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc) > span(seconds)


@pytest.mark.parametrize(("seconds", "expected"), [(None, 0), (-5, 0), (0, 0), (120, 120), (2.5, 2.5)])
def test_a_sane_duration_is_itself(seconds: float | None, expected: float):
    assert span(seconds) == timedelta(seconds=expected)


@pytest.mark.parametrize("idle_time", ABSURD)
def test_an_absurd_idle_time_keeps_idle_nodes_and_plans_the_rest(idle_time: float):
    clock = FrozenClock()
    nodes = [node(clock, "n1"), node(clock, "n2")]
    clock.advance(10 * 365 * 86400)  # ten years idle
    nodes = [replace(n, last_heartbeat=clock.now()) for n in nodes]
    plan = decide_cluster(cfg(idle_time_before_scale_down=idle_time), nodes, [], [], clock.now())
    assert plan.terminate == [] and plan.node_transitions == []
    assert plan.target_nodes == 0  # the wish to scale down stands; the idle time holds it back


def test_an_ordinary_idle_time_still_scales_down_to_the_tick():
    clock = FrozenClock()
    nodes = [node(clock, "n1")]
    clock.advance(120)
    nodes = [replace(n, last_heartbeat=clock.now()) for n in nodes]
    plan = decide_cluster(cfg(idle_time_before_scale_down=120), nodes, [], [], clock.now())
    assert [(i, s) for i, s, _ in plan.node_transitions] == [("n1", NodeState.LEAVING)]


@pytest.mark.parametrize("idle_time", ABSURD)
def test_an_absurd_instance_idle_time_never_stops_it(idle_time: float):
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    view = InstanceView(power="on", idle_time_s=idle_time, warn_before_s=300, node_state=NodeState.IDLE,
                        free_since=t0)
    verdict = idleness(view, t0 + timedelta(days=3650))
    assert verdict.idle and not verdict.stop and not verdict.warn
    assert verdict.stops_at == t0 + timedelta(seconds=MAX_SPAN_S)
    # A warning window as absurd: warned at once, and nothing overflows.
    assert idleness(replace(view, warn_before_s=idle_time), t0).warn
