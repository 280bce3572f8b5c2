"""The gateway's pure parts: routing (traffic weights, the deployment header, mirroring) and its metrics."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from cible.server.gateway.metrics import DeploymentMetrics
from cible.server.gateway.routes import (
    DeploymentRoute,
    EndpointRoute,
    Replica,
    UnknownDeployment,
    pick_deployment,
    pick_mirror,
)


def _endpoint(traffic: dict[str, int], mirror: dict[str, int] | None = None,
              names: tuple[str, ...] = ("blue", "green")) -> EndpointRoute:
    deployments = {n: DeploymentRoute(n, (Replica(f"{n}-0", "http://127.0.0.1:1"),)) for n in names}
    return EndpointRoute("ep", "key", deployments, traffic, mirror or {})


def _picks(route: EndpointRoute, n: int, header: str | None = None, seed: int = 7) -> Counter:
    rng = random.Random(seed)
    return Counter(pick_deployment(route, header, rng) for _ in range(n))


def test_traffic_weights_are_honoured_over_many_picks() -> None:
    counts = _picks(_endpoint({"blue": 90, "green": 10}), 20000)
    assert set(counts) == {"blue", "green"}
    assert abs(counts["green"] / 20000 - 0.10) < 0.01


def test_an_even_split_and_three_ways() -> None:
    counts = _picks(_endpoint({"blue": 50, "green": 50}), 20000)
    assert abs(counts["blue"] / 20000 - 0.5) < 0.015
    route = _endpoint({"a": 20, "b": 30, "c": 50}, names=("a", "b", "c"))
    counts = _picks(route, 30000)
    for name, share in {"a": 0.2, "b": 0.3, "c": 0.5}.items():
        assert abs(counts[name] / 30000 - share) < 0.015, (name, counts)


def test_a_zero_weight_deployment_gets_nothing_unless_pinned() -> None:
    route = _endpoint({"blue": 100, "green": 0})
    assert _picks(route, 2000) == Counter({"blue": 2000})
    assert _picks(route, 50, header="green") == Counter({"green": 50})


def test_the_header_pins_a_deployment_whatever_the_weights() -> None:
    route = _endpoint({"blue": 90, "green": 10})
    assert _picks(route, 200, header="green") == Counter({"green": 200})
    assert _picks(route, 200, header="blue") == Counter({"blue": 200})


def test_an_unknown_deployment_in_the_header_is_refused() -> None:
    with pytest.raises(UnknownDeployment):
        pick_deployment(_endpoint({"blue": 100}), "purple", random.Random(1))


def test_an_empty_header_is_no_pin() -> None:
    assert _picks(_endpoint({"blue": 100}), 10, header="") == Counter({"blue": 10})


def test_no_traffic_means_no_deployment() -> None:
    assert pick_deployment(_endpoint({}), None, random.Random(1)) is None
    assert pick_deployment(_endpoint({"blue": 0, "green": 0}), None, random.Random(1)) is None
    # ...but a pin still reaches a deployment
    assert pick_deployment(_endpoint({"blue": 0}), "blue", random.Random(1)) == "blue"


def test_weights_need_not_add_up_to_100() -> None:
    counts = _picks(_endpoint({"blue": 1, "green": 3}), 20000)
    assert abs(counts["green"] / 20000 - 0.75) < 0.015


def test_the_mirror_gets_its_share_of_traffic_routed_requests() -> None:
    route = _endpoint({"blue": 100}, {"green": 20})
    rng = random.Random(3)
    copies = sum(pick_mirror(route, False, rng) == "green" for _ in range(20000))
    assert abs(copies / 20000 - 0.20) < 0.01


def test_pinned_requests_are_not_mirrored() -> None:
    route = _endpoint({"blue": 100}, {"green": 50})
    rng = random.Random(3)
    assert all(pick_mirror(route, True, rng) is None for _ in range(1000))


def test_no_mirror_and_unknown_mirror_names_copy_nothing() -> None:
    rng = random.Random(3)
    assert all(pick_mirror(_endpoint({"blue": 100}), False, rng) is None for _ in range(500))
    ghost = _endpoint({"blue": 100}, {"ghost": 50})
    assert all(pick_mirror(ghost, False, rng) is None for _ in range(500))
    zero = _endpoint({"blue": 100}, {"green": 0})
    assert all(pick_mirror(zero, False, rng) is None for _ in range(500))


def test_a_seeded_source_gives_the_same_picks() -> None:
    route = _endpoint({"blue": 50, "green": 50})
    first = [pick_deployment(route, None, random.Random(11)) for _ in range(1)]
    rng_a, rng_b = random.Random(11), random.Random(11)
    assert [pick_deployment(route, None, rng_a) for _ in range(100)] == \
        [pick_deployment(route, None, rng_b) for _ in range(100)]
    assert first[0] in {"blue", "green"}


# ---- the gateway's per-deployment metrics (pure: the caller passes the time) --------------------------


def test_mean_in_flight_is_the_time_weighted_average_over_the_window() -> None:
    m = DeploymentMetrics(now=100.0)
    m.started(100.5)
    m.finished(102.5, 2.0, False)  # one request in flight for 2 s
    assert abs(m.mean_in_flight(110.0, 10.0) - 0.2) < 1e-9
    assert abs(m.mean_in_flight(103.0, 4.0) - 0.5) < 1e-9
    m.started(110.0)
    m.started(110.0)  # two more, still in flight: counted up to "now"
    assert abs(m.mean_in_flight(111.0, 1.0) - 2.0) < 1e-9
    assert m.snapshot(111.0)["in_flight"] == 2


def test_a_long_request_is_spread_over_the_seconds_it_covered() -> None:
    m = DeploymentMetrics(now=0.0)
    m.started(0.0)
    m.finished(1000.0, 1000.0, False)  # longer than the ring
    assert abs(m.mean_in_flight(1000.0, 60.0) - 1.0) < 1e-9


def test_snapshot_counts_rates_errors_and_percentiles() -> None:
    m = DeploymentMetrics(now=0.0)
    for i in range(1000):
        t = i * 0.01  # 100 requests/s for 10 s
        m.started(t)
        m.finished(t, 0.002 if i % 100 else 0.5, error=(i % 50 == 0))
    s = m.snapshot(10.0)
    assert abs(s["requests_per_s"] - 100) < 1
    assert s["errors"] == 20
    assert abs(s["p50_ms"] - 2.0) / 2.0 < 0.05
    assert abs(s["p99_ms"] - 2.0) / 2.0 < 0.05  # 1 % are slow: p99 is still the fast bin
    m.record(10.0, 1.0, True)  # a 429 that never held a slot
    assert m.snapshot(10.0)["errors"] == 21


def test_old_seconds_fall_out_of_the_window_and_memory_stays_bounded() -> None:
    m = DeploymentMetrics(now=0.0)
    for sec in range(5000):
        m.record(float(sec), 0.001 * (1 + sec % 97), False)
    assert len(m._hist) == 300 and sum(1 for h in m._hist if h) == 300
    s = m.snapshot(4999.5)
    assert abs(s["requests_per_s"] - 1.0) < 0.01
    assert m.snapshot(6000.0)["requests_per_s"] == 0 and m.snapshot(6000.0)["p50_ms"] == 0
