"""PUT /jobs/{name} answers the same whatever the timing: the same job again is 200, every time
(also for the loser of a concurrent insert race); a different job under that name is 409, every
time; one that differs only in display_name, description or tags updates them (Azure's `job
update`). Bodies are compared as the loader normalises them (defaults filled in), the way the stored
job was. On SQLite and, when CIBLE_TEST_POSTGRES_URL is set, on PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from api_support import api_client, error_of
from fastapi.testclient import TestClient

from cible.server.services import jobs as job_service

HELLO = {"command": "echo hello", "compute": "local", "environment_variables": {"A": "1"}}
RACES = 20
RACERS = 4


@pytest.fixture
def api(migrated_db_url: str, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        yield client


def put(api: TestClient, name: str, body: dict[str, Any]):  # noqa: ANN201
    return api.put(f"/api/v1/jobs/{name}", json=body)


def put_together(api: TestClient, name: str, bodies: list[dict[str, Any]]) -> list[Any]:
    """PUT each body from its own thread, all released at once."""
    start = threading.Barrier(len(bodies))

    def one(body: dict[str, Any]):  # noqa: ANN202
        start.wait()
        return put(api, name, body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def test_the_same_job_again_is_200_every_time_and_changes_nothing(api: TestClient):
    first = put(api, "same", HELLO)
    assert first.status_code == 200
    for body in (HELLO, {**HELLO, "type": "command", "name": "same", "inputs": {}, "outputs": {}, "tags": {}}):
        again = put(api, "same", body)  # defaults spelled out are the same job
        assert again.status_code == 200, again.text
        assert again.json()["status_history"] == first.json()["status_history"]
    assert api.get("/api/v1/jobs", params={"top": 10}).json()["count"] == 1


@pytest.mark.parametrize("other", [
    {**HELLO, "command": "echo other"},
    {"command": "echo hello", "compute": "local"},  # a field left out differs too
    {**HELLO, "environment_variables": {"A": "2"}},
])
def test_a_different_job_under_that_name_is_409_every_time(api: TestClient, other: dict[str, Any]):
    assert put(api, "taken", HELLO).status_code == 200
    for _ in range(3):
        refused = put(api, "taken", other)
        assert refused.status_code == 409, refused.text
        assert "cannot change" in error_of(refused)["message"]
    assert api.get("/api/v1/jobs/taken").json()["environment_variables"] == {"A": "1"}


def test_only_display_name_description_and_tags_change_by_put(api: TestClient):
    put(api, "tagged", HELLO)
    changed = {**HELLO, "tags": {"team": "a"}, "display_name": "mine", "description": "why"}
    for _ in range(2):
        response = put(api, "tagged", changed)
        assert response.status_code == 200
        assert (response.json()["tags"], response.json()["display_name"]) == ({"team": "a"}, "mine")


@pytest.mark.parametrize(("loser", "status"), [
    (HELLO, 200),
    ({**HELLO, "tags": {"team": "b"}}, 200),
    ({**HELLO, "command": "echo loser"}, 409),
])
def test_the_loser_of_the_insert_race_answers_as_if_it_had_come_second(api: TestClient, monkeypatch,  # noqa: ANN001
                                                                       loser: dict[str, Any], status: int):
    # The winner's insert lands between the loser's check for the name and its own insert.
    original = job_service.display_name_for

    def racing(name: str) -> str:
        monkeypatch.setattr(job_service, "display_name_for", original)
        api.app.state.jobs.create_or_update(name, HELLO)
        return original(name)

    monkeypatch.setattr(job_service, "display_name_for", racing)
    response = put(api, "raced", loser)
    assert response.status_code == status, response.text
    stored = api.get("/api/v1/jobs/raced").json()
    assert stored["command"] == "echo hello"  # the stored one won
    assert stored["tags"] == loser.get("tags", {}) if status == 200 else stored["tags"] == {}
    assert [h["status"] for h in stored["status_history"]] == ["NotStarted", "Queued"]  # stored once


def test_identical_puts_racing_all_answer_200(api: TestClient):
    for race in range(RACES):
        responses = put_together(api, f"race-{race}", [HELLO] * RACERS)
        assert [r.status_code for r in responses] == [200] * RACERS, [r.text for r in responses]
        assert len({r.json()["creation_context"]["created_at"] for r in responses}) == 1


def test_different_puts_racing_are_decided_by_the_one_stored(api: TestClient):
    bodies = [HELLO, {**HELLO, "command": "echo other"}, HELLO, {**HELLO, "tags": {"t": "1"}}]
    for race in range(RACES):
        responses = put_together(api, f"mixed-{race}", bodies)
        stored = api.get(f"/api/v1/jobs/mixed-{race}").json()
        for body, response in zip(bodies, responses):
            expected = 200 if body["command"] == stored["command"] else 409
            assert response.status_code == expected, (race, body, response.text)


def test_put_changes_the_mutable_fields_by_the_rule_of_update(api: TestClient):
    from cible.core.names import display_name_for

    put(api, "ruled", {**HELLO, "description": "why", "display_name": "mine", "tags": {"team": "a"}})
    again = put(api, "ruled", HELLO)  # the same job, its description, display name and tags left out: cleared
    assert again.status_code == 200, again.text
    job = again.json()
    assert "description" not in job and job["tags"] == {} and job["display_name"] == display_name_for("ruled")
    put(api, "ruled", {**HELLO, "display_name": "mine", "tags": {"n": 3}})
    by_put = put(api, "ruled", {**HELLO, "display_name": "", "tags": {"n": 3}}).json()
    put(api, "ruled", {**HELLO, "display_name": "mine", "tags": {"n": 3}})
    by_patch = api.patch("/api/v1/jobs/ruled", json={"display_name": ""}).json()
    assert by_put["display_name"] == by_patch["display_name"] == display_name_for("ruled")  # not the old one
    assert by_put["tags"] == by_patch["tags"] == {"n": "3"}
