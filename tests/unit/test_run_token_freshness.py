"""A job's run token is good for that submission of the job while it runs (and a grace after),
never for an earlier or later job of the same name."""

from __future__ import annotations

from datetime import timedelta

import pytest
from api_support import TOKEN, api_client
from fastapi.testclient import TestClient

from cible.server.services.jobs import RUN_TOKEN_GRACE
from cible.server.store.rows import JobRow
from cible.server.tokens import Scope, Tokens
from cible.testing import FrozenClock

HELLO = {"command": "echo hello", "compute": "local"}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def api(migrated_db_url: str, tmp_path, clock: FrozenClock) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path, clock) as client:
        yield client


def plan_of(api: TestClient, name: str) -> dict:
    return api.app.state.jobs.run_handle(name)[1].plan


def end(api: TestClient, name: str, clock: FrozenClock) -> None:
    with api.app.state.store.session() as session:
        row = session.get(JobRow, name)
        row.status, row.ended_at = "Completed", clock.now()


def test_the_token_names_its_submission_and_lapses_after_the_job(api: TestClient, clock: FrozenClock):
    assert api.put("/api/v1/jobs/j1", json=HELLO).status_code == 200
    plan = plan_of(api, "j1")
    token = Tokens(TOKEN).run(plan)
    scope = Tokens(TOKEN).scope_of(token.encode())
    assert scope == Scope("job", "j1", plan["token_salt"]) and len(plan["token_salt"]) >= 12
    jobs = api.app.state.jobs
    assert jobs.run_token_refusal("j1", scope.salt) is None
    end(api, "j1", clock)
    clock.advance(RUN_TOKEN_GRACE.total_seconds() - 1)
    assert jobs.run_token_refusal("j1", scope.salt) is None  # its last uploads after the end
    clock.advance(2)
    assert "spent" in jobs.run_token_refusal("j1", scope.salt)


def test_a_job_submitted_again_under_the_name_gets_another_token(api: TestClient, clock: FrozenClock):
    assert api.put("/api/v1/jobs/j2", json=HELLO).status_code == 200
    first = plan_of(api, "j2")["token_salt"]
    end(api, "j2", clock)
    assert api.delete("/api/v1/jobs/j2").status_code == 204
    assert "no longer exists" in api.app.state.jobs.run_token_refusal("j2", first)
    assert api.put("/api/v1/jobs/j2", json=HELLO).status_code == 200
    second = plan_of(api, "j2")["token_salt"]
    assert second != first and Tokens(TOKEN).job("j2", first) != Tokens(TOKEN).job("j2", second)
    assert "earlier job" in api.app.state.jobs.run_token_refusal("j2", first)
    assert api.app.state.jobs.run_token_refusal("j2", second) is None
    clock.advance(timedelta(days=1).total_seconds())
    assert api.app.state.jobs.run_token_refusal("j2", second) is None  # still queued: no end yet
