from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cible.core.catalog.queries import get_size
from cible.core.lifecycle.nodes import NodeState
from cible.core.planning.costs import (
    IDLE_AND_OVERHEAD,
    LOW_PRIORITY_FACTOR,
    UNATTRIBUTED,
    CostLine,
    NodeCost,
    Segment,
    StateChange,
    effective_price,
    estimate,
    node_cost,
    report,
    segments,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
PRICE = 3.6  # $/hour: $0.001 a second, so costs read as seconds / 1000


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def life(job: str = "job-a", offset: float = 0.0) -> list[StateChange]:
    """preparing 30 s → idle 60 s → running `job` 120 s → idle 10 s → leaving 5 s → removed."""
    return [
        StateChange(at(offset + 0), "preparing"),
        StateChange(at(offset + 30), "idle"),
        StateChange(at(offset + 90), "running", job),
        StateChange(at(offset + 210), "idle"),
        StateChange(at(offset + 220), "leaving"),
        StateChange(at(offset + 225), "removed"),
    ]


def approx(x):
    return pytest.approx(x, abs=1e-12)


def test_segments_are_the_consecutive_states_until_removal():
    segs = segments(life(), now=at(10_000))
    assert [(s.state, s.job, s.seconds) for s in segs] == [
        ("preparing", None, 30), ("idle", None, 60), ("running", "job-a", 120), ("idle", None, 10), ("leaving", None, 5),
    ]
    assert segs[0] == Segment("preparing", None, at(0), at(30))


def test_a_live_node_is_open_until_now():
    changes = [StateChange(at(0), "preparing"), StateChange(at(20), "idle")]
    segs = segments(changes, now=at(65))
    assert [(s.state, s.seconds) for s in segs] == [("preparing", 20), ("idle", 45)]


def test_since_clips_and_empty_intervals_are_dropped():
    segs = segments(life(), now=at(10_000), since=at(100))
    assert [(s.state, s.start, s.seconds) for s in segs] == [
        ("running", at(100), 110), ("idle", at(210), 10), ("leaving", at(220), 5),
    ]
    assert segments(life(), now=at(10_000), since=at(500)) == []
    # Same-instant changes (preparing → idle at once) leave no zero-length segment.
    changes = [StateChange(at(0), "preparing"), StateChange(at(0), "idle")]
    assert [s.state for s in segments(changes, now=at(5))] == ["idle"]


def test_now_clips_a_history_that_goes_past_it_and_order_is_by_time():
    changes = list(reversed(life()))
    segs = segments(changes, now=at(100))
    assert [(s.state, s.seconds) for s in segs] == [("preparing", 30), ("idle", 60), ("running", 10)]


def test_node_state_members_work_as_states():
    changes = [StateChange(at(0), NodeState.IDLE), StateChange(at(40), NodeState.REMOVED)]
    cost = node_cost("n1", "cpu", PRICE, changes, now=at(100))
    assert cost.idle_seconds == 40 and cost.cost == approx(0.04)


def test_node_cost_splits_idle_job_and_overhead_exactly():
    cost = node_cost("n1", "cpu", PRICE, life(), now=at(10_000))
    assert cost.seconds == 225
    assert cost.cost == approx(0.225)
    assert (cost.idle_seconds, cost.idle_cost) == (70, approx(0.07))
    assert cost.by_job == {"job-a": approx(0.12)}
    assert cost.by_job_seconds == {"job-a": 120}
    assert cost.overhead_cost == approx(0.035)  # preparing 30 s + leaving 5 s
    assert cost.cost == approx(cost.idle_cost + sum(cost.by_job.values()) + cost.overhead_cost)


def test_node_cost_at_a_catalog_price():
    size = get_size("Standard_DS3_v2")  # $0.229 an hour
    cost = node_cost("n1", "cpu", size.price_per_hour, life(), now=at(10_000))
    assert cost.cost == approx(0.229 * 225 / 3600)  # 0.0143125
    assert cost.by_job["job-a"] == approx(0.229 * 120 / 3600)


def test_a_running_node_without_a_job_name_is_overhead_and_since_limits_the_cost():
    changes = [StateChange(at(0), "running"), StateChange(at(50), "running", "job-b")]
    cost = node_cost("n1", "cpu", PRICE, changes, now=at(80), since=at(20))
    assert cost.seconds == 60
    assert cost.overhead_cost == approx(0.03)
    assert cost.by_job == {"job-b": approx(0.03)}


def test_low_priority_price_is_the_documented_share_of_dedicated():
    assert LOW_PRIORITY_FACTOR == 0.2
    assert effective_price(3.06, low_priority=False) == 3.06
    assert effective_price(3.06, low_priority=True) == pytest.approx(0.612)
    cost = node_cost("n1", "gpu", effective_price(PRICE, True), life(), now=at(10_000))
    assert cost.cost == approx(0.045)


def nodes() -> list[NodeCost]:
    now = at(10_000)
    return [
        # cluster "cpu" (owned by alice): two nodes, jobs A and B
        node_cost("c1", "cpu", PRICE, life("job-a"), now),
        node_cost("c2", "cpu", PRICE, life("job-b"), now),
        # cluster "gpu" (owned by nobody known): 10x the price, job A again
        node_cost("g1", "gpu", PRICE * 10, life("job-a"), now),
        # serverless compute made for job C: its whole life is job C's
        node_cost("s1", "serverless-job-c", PRICE, life("job-c"), now),
    ]


def test_report_by_compute_puts_whole_nodes_under_their_compute_most_expensive_first():
    lines = report(nodes(), by="compute")
    assert [line.key for line in lines] == ["gpu", "cpu", "serverless-job-c"]
    gpu, cpu, serverless = lines
    assert (gpu.cost, gpu.seconds, gpu.idle_cost) == (approx(2.25), 225, approx(0.7))
    assert (cpu.cost, cpu.seconds, cpu.idle_cost) == (approx(0.45), 450, approx(0.14))
    assert serverless.cost == approx(0.225)


def test_report_by_job_charges_running_time_and_dedicated_nodes_whole():
    lines = report(nodes(), by="job", dedicated_to_job={"serverless-job-c": "job-c"})
    by_key = {line.key: line for line in lines}
    assert [line.key for line in lines] == ["job-a", IDLE_AND_OVERHEAD, "job-c", "job-b"]
    assert by_key["job-a"] == CostLine("job-a", approx(0.12 + 1.2), 240, 0.0)
    assert by_key["job-b"].cost == approx(0.12)
    # job C gets its serverless node's idle and boot time too, not only its 120 s of running.
    assert by_key["job-c"] == CostLine("job-c", approx(0.225), 225, approx(0.07))
    # What no job caused: idle and overhead of c1, c2 (105 s each at 1x) and g1 (105 s at 10x).
    assert by_key[IDLE_AND_OVERHEAD].cost == approx(0.105 * 2 + 1.05)
    assert by_key[IDLE_AND_OVERHEAD].seconds == 315
    assert by_key[IDLE_AND_OVERHEAD].idle_cost == approx(0.07 * 2 + 0.7)
    assert sum(line.cost for line in lines) == approx(sum(n.cost for n in nodes()))


def test_report_by_job_without_dedicated_nodes_splits_serverless_like_any_other():
    by_key = {line.key: line for line in report(nodes(), by="job")}
    assert by_key["job-c"].cost == approx(0.12)


def test_report_by_user_charges_job_creators_then_compute_owners():
    lines = report(
        nodes(),
        by="user",
        job_users={"job-a": "bob", "job-c": "carol"},  # job-b's creator is unknown
        compute_users={"cpu": "alice"},
        dedicated_to_job={"serverless-job-c": "job-c"},
    )
    by_key = {line.key: line.cost for line in lines}
    assert by_key == {
        "bob": approx(0.12 + 1.2),  # job A on cpu and gpu
        UNATTRIBUTED: approx(1.05 + 0.12),  # gpu's idle/overhead (no owner) + job B (no creator)
        "carol": approx(0.225),  # job C's whole serverless node
        "alice": approx(0.105 * 2),  # cpu's idle and overhead
    }
    assert [line.key for line in lines] == ["bob", UNATTRIBUTED, "carol", "alice"]
    assert sum(by_key.values()) == approx(sum(n.cost for n in nodes()))


def test_report_ties_are_ordered_by_key_and_empty_input_gives_no_lines():
    a = node_cost("a", "zeta", PRICE, life(), at(10_000))
    b = node_cost("b", "alpha", PRICE, life(), at(10_000))
    assert [line.key for line in report([a, b], by="compute")] == ["alpha", "zeta"]
    assert report([], by="job") == []
    with pytest.raises(ValueError):
        report([a], by="team")  # type: ignore[arg-type]


def test_a_node_that_only_ran_a_job_leaves_no_idle_and_overhead_line():
    changes = [StateChange(at(0), "running", "job-a"), StateChange(at(60), "removed")]
    lines = report([node_cost("n", "cpu", PRICE, changes, at(100))], by="job")
    assert lines == [CostLine("job-a", approx(0.06), 60, 0.0)]


def test_estimate_at_submit():
    assert estimate(0.229, 4, 7200) == {
        "currency": "USD", "per_hour": 0.916, "max": 1.832, "note": "indicative catalog prices",
    }
    assert estimate(3.06, 2, None)["max"] is None
    assert estimate(3.06, 2, None)["per_hour"] == 6.12
    assert estimate(1.0, 1, 90)["max"] == 0.025
