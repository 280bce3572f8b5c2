"""`az ml job archive|restore|update|validate` over the REST API, in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from api_support import api_client, error_of, upload
from fastapi.testclient import TestClient

from cible.core.lifecycle.jobs import JobStatus
from cible.server.services.jobs import set_status
from cible.server.store.rows import JobRow

HELLO = {"command": "echo hello", "compute": "local"}
TO_COMPLETED = (JobStatus.STARTING, JobStatus.RUNNING, JobStatus.FINALIZING, JobStatus.COMPLETED)


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        yield client


def end(api: TestClient, name: str, steps=(JobStatus.CANCELED,)) -> None:  # noqa: ANN001
    """Move a queued job through `steps` as the reconciler would (the API tests run none)."""
    clock = api.app.state.clock
    with api.app.state.store.session() as session:
        row = session.get(JobRow, name)
        for step in steps:
            set_status(session, row, step, clock.now(), reason="test")


def names(api: TestClient, **params: bool) -> list[str]:
    return [j["name"] for j in api.get("/api/v1/jobs", params=params).json()["value"]]


def test_only_an_ended_job_is_archived_and_list_hides_it_unless_asked(api: TestClient):
    for name in ("done", "live"):
        api.put(f"/api/v1/jobs/{name}", json=HELLO)
    running = api.post("/api/v1/jobs/live:archive")
    assert running.status_code == 409
    message = error_of(running)["message"]
    assert "Queued" in message and "cancel" in message and "wait" in message
    end(api, "done", TO_COMPLETED)
    archived = api.post("/api/v1/jobs/done:archive")
    assert archived.status_code == 200 and archived.json()["is_archived"] is True
    assert api.post("/api/v1/jobs/done:archive").json()["is_archived"] is True  # idempotent
    assert names(api) == ["live"]
    assert sorted(names(api, include_archived=True)) == ["done", "live"]
    assert names(api, archived_only=True) == ["done"]
    assert api.get("/api/v1/jobs", params={"include_archived": True}).json()["count"] == 2
    assert api.get("/api/v1/jobs/done").json()["is_archived"] is True  # still shown by name
    assert api.get("/api/v1/jobs/live").json()["is_archived"] is False
    both = api.get("/api/v1/jobs", params={"include_archived": True, "archived_only": True})
    assert both.status_code == 400 and "archived_only" in error_of(both)["message"]
    restored = api.post("/api/v1/jobs/done:restore")
    assert restored.status_code == 200 and restored.json()["is_archived"] is False
    assert sorted(names(api)) == ["done", "live"] and names(api, archived_only=True) == []


def test_a_canceled_or_failed_job_is_archived_too_and_unknown_jobs_are_404(api: TestClient):
    api.put("/api/v1/jobs/c", json=HELLO)
    end(api, "c", (JobStatus.CANCELED,))
    api.put("/api/v1/jobs/f", json=HELLO)
    end(api, "f", (JobStatus.FAILED,))
    assert api.post("/api/v1/jobs/c:archive").json()["is_archived"] is True
    assert api.post("/api/v1/jobs/f:archive").json()["is_archived"] is True
    for verb in ("archive", "restore"):
        missing = api.post(f"/api/v1/jobs/nope:{verb}")
        assert missing.status_code == 404 and "nope" in error_of(missing)["message"]
        assert "did you mean" not in error_of(missing)["message"]


def test_a_job_name_cut_short_is_answered_with_the_jobs_it_begins(api: TestClient):
    for name in ("zen_brush_yypbnwlo7d", "zen_brush_yypbnwlo7e", "run_1", "runx2"):
        assert api.put(f"/api/v1/jobs/{name}", json=HELLO).status_code == 200
    cut = error_of(api.get("/api/v1/jobs/zen_brush_yypbnwlo7"))["message"]
    assert cut == ("job 'zen_brush_yypbnwlo7' does not exist in this workspace; did you mean "
                   "'zen_brush_yypbnwlo7d' or 'zen_brush_yypbnwlo7e'?")
    assert error_of(api.get("/api/v1/jobs/run_"))["message"].endswith("did you mean 'run_1'?")  # _ is no wildcard


def test_update_changes_display_name_description_and_tags_only(api: TestClient):
    api.put("/api/v1/jobs/u", json={**HELLO, "description": "first", "tags": {"keep": "me"}})
    changed = api.patch("/api/v1/jobs/u", json={"display_name": "nice", "tags": {"team": "a", "n": 3}})
    assert changed.status_code == 200, changed.text
    job = changed.json()
    assert job["display_name"] == "nice" and job["tags"] == {"team": "a", "n": "3"}  # tags replaced, made text
    assert job["description"] == "first" and job["command"] == "echo hello"  # the rest as it was
    assert api.get("/api/v1/jobs/u").json()["display_name"] == "nice"
    cleared = api.patch("/api/v1/jobs/u", json={"description": None}).json()
    assert "description" not in cleared and cleared["display_name"] == "nice"
    for body, field in (({"command": "echo other"}, "command"), ({"tags": {}, "compute": "x"}, "compute"),
                        ({"status": "Completed"}, "status")):
        refused = api.patch("/api/v1/jobs/u", json=body)
        assert refused.status_code == 400, refused.text
        error = error_of(refused)
        assert error["details"]["field"] == field
        assert field in error["message"] and "display_name, description, tags" in error["message"]
    assert api.get("/api/v1/jobs/u").json()["tags"] == {"team": "a", "n": "3"}  # a refusal changes nothing
    bad = api.patch("/api/v1/jobs/u", json={"tags": "team=a"})
    assert bad.status_code == 422 and "tags" in error_of(bad)["message"]
    assert api.patch("/api/v1/jobs/nope", json={"tags": {}}).status_code == 404


def test_update_works_on_a_job_with_code_inputs_and_an_inline_environment(api: TestClient):
    code = upload(api, {"main.py": b"print(1)\n"})
    job = {**HELLO, "command": "python main.py ${{inputs.n}}", "code": code, "inputs": {"n": 3},
           "environment": {"image": "python:3.11-slim"}, "experiment_name": "exp"}
    created = api.put("/api/v1/jobs/rich", json=job)
    assert created.status_code == 200, created.text
    updated = api.patch("/api/v1/jobs/rich", json={"tags": {"k": "v"}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["tags"] == {"k": "v"} and updated.json()["code"] == code


def test_validate_checks_what_a_submit_checks_and_creates_nothing(api: TestClient):
    ok = api.post("/api/v1/jobs/v1:validate", json=HELLO)
    assert ok.status_code == 200, ok.text
    assert ok.json()["passed"] is True and ok.json()["target"] == "local" and ok.json()["exists"] is False
    assert api.get("/api/v1/jobs/v1").status_code == 404
    assert api.get("/api/v1/jobs", params={"include_archived": True}).json()["count"] == 0
    for body in ({"command": "echo", "compute": "azureml:cpu-cluster"},  # no such compute
                 {**HELLO, "resources": {"instance_count": 2}},  # local is one node
                 {**HELLO, "environment": "azureml:ghost-env@latest"},  # no such environment
                 {"comand": "echo"}):  # not a job
        checked = api.post("/api/v1/jobs/v2:validate", json=body)
        submitted = api.put("/api/v1/jobs/v2", json=body)
        assert 400 <= checked.status_code < 500
        assert (checked.status_code, error_of(checked)) == (submitted.status_code, error_of(submitted))
    assert api.get("/api/v1/jobs/v2").status_code == 404


def test_validate_under_an_existing_name_answers_as_the_submit_would(api: TestClient):
    api.put("/api/v1/jobs/same", json=HELLO)
    again = api.post("/api/v1/jobs/same:validate", json={**HELLO, "tags": {"a": "b"}})
    assert again.status_code == 200 and again.json()["exists"] is True
    assert api.get("/api/v1/jobs/same").json()["tags"] == {}  # validating wrote nothing
    other = api.post("/api/v1/jobs/same:validate", json={**HELLO, "command": "echo other"})
    assert other.status_code == 409 and "command" in error_of(other)["message"]
    bad_name = api.post("/api/v1/jobs/bad name:validate", json=HELLO)
    assert bad_name.status_code == 400 and "job name" in error_of(bad_name)["message"]
