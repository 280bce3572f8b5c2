"""The warm pool's ledger (cible.server.services.warm_pool) on SQLite and PostgreSQL: each warm
agent's time is billed at the default serverless size from its start until it became a node; the
cost report shows it on a "(warm pool)" line, all idle, cut by `since`; a span a crash left open
is closed where the pool last said it ran; and CIBLE_WARM_NODES must be a count."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cible.core import catalog
from cible.core.errors import InvalidRequestError
from cible.server.services.costs import CostService
from cible.server.services.warm_pool import WARM_POOL, WarmPoolLedger
from cible.server.settings import ServerSettings
from cible.server.store.db import Store
from cible.testing import FrozenClock

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
SIZE = catalog.get_size("Standard_DS2_v2")


@pytest.fixture
def store(migrated_db_url: str):  # noqa: ANN201
    store = Store(migrated_db_url)
    store.migrate()
    yield store
    store.close()


def test_warm_time_is_billed_until_the_agent_becomes_a_node_and_shown_as_idle(store: Store) -> None:
    ledger = WarmPoolLedger(store, lambda: SIZE)
    first = ledger.opened(T0)
    ledger.closed(first, T0 + timedelta(hours=1))  # it became a node after an hour
    ledger.opened(T0 + timedelta(hours=1))  # its replacement, still waiting two hours later
    clock = FrozenClock(T0 + timedelta(hours=3))
    report = CostService(store, clock).report(by="compute")
    (line,) = report["value"]
    assert line["key"] == WARM_POOL and line["node_hours"] == pytest.approx(3.0)
    assert line["cost"] == pytest.approx(3 * SIZE.price_per_hour) and line["idle"] == pytest.approx(line["cost"])
    by_job = CostService(store, clock).report(by="job")["value"]
    assert [entry["key"] for entry in by_job] == ["(idle and overhead)"]  # no job caused it
    since = CostService(store, clock).report(by="compute", since=T0 + timedelta(hours=2))["value"][0]
    assert since["node_hours"] == pytest.approx(1.0)  # the first span ended before: left out


def test_a_span_left_open_by_a_crash_ends_where_the_pool_last_said_it_ran(store: Store) -> None:
    ledger = WarmPoolLedger(store, lambda: SIZE)
    span = ledger.opened(T0)
    ledger.alive([span], T0 + timedelta(minutes=10))
    # the server dies here; it starts again a day later
    assert ledger.close_left_open() == 1
    assert ledger.close_left_open() == 0
    later = CostService(store, FrozenClock(T0 + timedelta(days=1))).report(by="compute")["value"][0]
    assert later["node_hours"] == pytest.approx(10 / 60, abs=1e-6)  # rounded to 6 decimals


def test_the_warm_pool_size_must_be_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIBLE_WARM_NODES", "2")
    assert ServerSettings().warm_nodes == 2
    monkeypatch.setenv("CIBLE_WARM_NODES", "two")
    with pytest.raises(InvalidRequestError, match="CIBLE_WARM_NODES='two' is not a count"):
        ServerSettings()
