"""Users, roles and personal tokens over the REST API: the workspace token is its first Owner's; a user's
token does what their role allows (every route × every role), nothing once revoked or expired, and is
kept only as its hash."""

from __future__ import annotations

import re

import pytest
from api_support import api_client, assert_envelope
from fastapi.testclient import TestClient

from cible.core.roles import NODES_ONLY, ROLES, allows, permission_for
from cible.testing import FrozenClock
from cible.workspace import current_user


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def api(migrated_db_url, tmp_path, clock) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path, clock) as client:
        yield client


def as_user(api: TestClient, name: str, role: str, **token: object) -> dict[str, str]:
    """The headers of a new user's own token (made by the Owner's workspace token)."""
    made = api.post("/api/v1/users", json={"name": name, "role": role})
    assert made.status_code == 200, made.text
    secret = api.post("/api/v1/tokens", json={"user": name, "name": "test", **token}).json()["token"]
    return {"Authorization": f"Bearer {secret}"}


def test_the_workspace_token_is_its_first_owner(api: TestClient) -> None:
    me = api.get("/api/v1/users/me").json()
    assert me["name"] == current_user() and me["role"] == "Owner" and "users/write" in me["permissions"]
    assert [(u["name"], u["role"]) for u in api.get("/api/v1/users").json()["value"]] == [(current_user(), "Owner")]


def test_a_user_token_acts_as_its_user_whatever_the_header_says(api: TestClient) -> None:
    bob = as_user(api, "bob", "data-scientist")
    me = api.get("/api/v1/users/me", headers={**bob, "X-Cible-User": "alice"}).json()
    assert (me["name"], me["role"]) == ("bob", "AzureML Data Scientist")
    job = api.put("/api/v1/jobs/j1", json={"command": "echo"}, headers={**bob, "X-Cible-User": "alice"})
    assert job.status_code == 200, job.text
    assert job.json()["created_by"] == "bob"


def test_a_reader_sees_but_cannot_change(api: TestClient) -> None:
    api.put("/api/v1/jobs/seen", json={"command": "echo"})
    carol = as_user(api, "carol", "Reader")
    assert api.get("/api/v1/jobs/seen", headers=carol).status_code == 200
    refused = api.put("/api/v1/jobs/mine", json={"command": "echo"}, headers=carol)
    error = assert_envelope(refused, 403)
    assert "user 'carol' (Reader) lacks the permission jobs/write" in error["message"]
    assert "Owner, Contributor, AzureML Data Scientist" in error["message"]
    upload = assert_envelope(api.post("/api/v1/blobs:missing", json={"sha256": []}, headers=carol), 403)
    assert "assets/write that uploading files (a job's code or an asset's data" in upload["message"]
    assert assert_envelope(api.post("/api/v1/jobs/seen:cancel", headers=carol), 403)


def test_only_an_owner_approves_quota_requests_and_manages_users(api: TestClient) -> None:
    dave = as_user(api, "dave", "Contributor")
    asked = api.post("/api/v1/quotas/total/requests", json={"vcpus": 8}, headers=dave)
    assert asked.status_code == 200, asked.text
    refused = api.post(f"/api/v1/quota-requests/{asked.json()['id']}:approve", headers=dave)
    assert "quotas/approve" in assert_envelope(refused, 403)["message"]
    assert api.post(f"/api/v1/quota-requests/{asked.json()['id']}:approve").status_code == 200  # the Owner
    assert_envelope(api.post("/api/v1/users", json={"name": "eve", "role": "Owner"}, headers=dave), 403)


def test_tokens_are_their_users_own_and_only_their_hash_is_kept(api: TestClient, tmp_path) -> None:  # noqa: ANN001
    erin = as_user(api, "erin", "Reader")
    made = api.post("/api/v1/tokens", json={"name": "laptop"}, headers=erin).json()
    assert made["user"] == "erin" and made["token"].startswith("cible-pat.")
    listed = api.get("/api/v1/tokens", headers=erin).json()["value"]
    assert sorted(t["name"] for t in listed) == ["laptop", "test"] and all("token" not in t for t in listed)
    # Another user's tokens are an Owner's to see or make.
    as_user(api, "frank", "Reader")
    assert_envelope(api.get("/api/v1/tokens", params={"user": "frank"}, headers=erin), 403)
    assert_envelope(api.post("/api/v1/tokens", json={"user": "frank"}, headers=erin), 403)
    secret = made["token"]
    with api.app.state.store.session() as session:
        from sqlalchemy import text

        rows = [tuple(map(str, r)) for r in session.execute(text("SELECT * FROM user_tokens")).all()]
    assert rows and not any(secret in value or secret.split(".")[-1] in value for row in rows for value in row)


def test_a_revoked_or_expired_token_is_refused(api: TestClient, clock: FrozenClock) -> None:
    gina = as_user(api, "gina", "Reader", expires_in_days=1)
    assert api.get("/api/v1/jobs", headers=gina).status_code == 200
    clock.advance(24 * 3600 + 1)
    assert_envelope(api.get("/api/v1/jobs", headers=gina), 401)
    assert api.get("/api/v1/tokens", params={"user": "gina"}).json()["value"][0]["state"] == "expired"
    hank = as_user(api, "hank", "Reader")
    token_id = api.get("/api/v1/tokens", params={"user": "hank"}).json()["value"][0]["id"]
    assert api.post(f"/api/v1/tokens/{token_id}:revoke").json()["state"] == "revoked"
    assert_envelope(api.get("/api/v1/jobs", headers=hank), 401)


def test_users_are_checked_and_the_last_owner_stays(api: TestClient) -> None:
    assert "role: 'boss' is not a role" in assert_envelope(api.post("/api/v1/users", json={"name": "x", "role": "boss"}), 400)["message"]
    typo = assert_envelope(api.post("/api/v1/users", json={"name": "x", "role": "data-scientst"}), 400)["message"]
    assert "did you mean AzureML Data Scientist?" in typo
    assert "not a valid user name" in assert_envelope(api.post("/api/v1/users", json={"name": "-x", "role": "Reader"}), 400)["message"]
    assert_envelope(api.post("/api/v1/users", json={"name": current_user(), "role": "Reader"}), 409)
    assert "only Owner" in assert_envelope(api.delete(f"/api/v1/users/{current_user()}"), 409)["message"]
    as_user(api, "ivan", "Reader")
    assert api.patch("/api/v1/users/ivan", json={"role": "compute-operator"}).json()["role"] == "AzureML Compute Operator"
    assert api.delete("/api/v1/users/ivan").json()["name"] == "ivan"
    assert_envelope(api.get("/api/v1/users/ivan"), 404)


# -- every route x every role --------------------------------------------------------------------------
SAMPLE = {"kind": "data", "scope": "total", "request_id": "1", "version": "1", "path": "a.txt", "sha256": "0" * 64}


def _routes(api: TestClient) -> list[tuple[str, str]]:
    out = []
    for path, operations in api.app.openapi()["paths"].items():
        concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLE.get(m.group(1), "nothing-here"), path)
        out += [(method.upper(), concrete) for method in operations]
    return out


def test_every_route_is_allowed_or_refused_to_each_role_as_the_table_says(api: TestClient) -> None:
    headers = {role: as_user(api, f"u{i}", role) for i, role in enumerate(ROLES)}
    routes = _routes(api)
    assert len(routes) > 90
    unnamed = [(m, p) for m, p in routes if permission_for(m, p) == "undefined"]
    assert unnamed == [], "routes with no permission in cible.core.roles"
    for method, path in routes:
        permission = permission_for(method, path)
        for role in ROLES:
            answer = api.request(method, path, headers=headers[role], json={})
            refused = answer.status_code == 403 and "lacks the permission" in answer.text
            nodes_only = answer.status_code == 403 and "route of cible's nodes and jobs" in answer.text
            if permission == NODES_ONLY:
                assert nodes_only, (role, method, path, answer.status_code, answer.text[:200])
            elif allows(role, permission):
                assert not refused and answer.status_code != 401, (role, method, path, answer.text[:200])
            else:
                assert refused and permission in answer.text, (role, method, path, answer.status_code)


def test_the_docs_table_is_the_roles_module() -> None:
    from pathlib import Path

    from cible.core.roles import PERMISSIONS

    page = (Path(__file__).parents[2] / "docs" / "roles.md").read_text()
    table = page[page.index("| permission | Owner"):].split("\n\n")[0].splitlines()
    assert [c.strip() for c in table[0].split("|")[2:-1]] == ["Owner", "Contributor", "Reader", "Data Scientist",
                                                              "Compute Operator"]
    rows = {line.split("|")[1].strip().strip("`"): [c.strip() == "yes" for c in line.split("|")[2:-1]]
            for line in table[2:]}
    assert list(rows) == list(PERMISSIONS)
    assert all(rows[p] == [allows(r, p) for r in ROLES] for p in PERMISSIONS)


def test_the_history_names_who_made_each_move(api: TestClient) -> None:
    kim = as_user(api, "kim", "data-scientist")
    api.put("/api/v1/jobs/k1", json={"command": "echo"}, headers=kim)
    api.post("/api/v1/jobs/k1:cancel", headers=kim)
    history = api.get("/api/v1/jobs/k1").json()["status_history"]
    assert [(h["status"], h.get("by")) for h in history] == [
        ("NotStarted", "kim"), ("Queued", "kim"), ("CancelRequested", "kim")]
    asked = api.post("/api/v1/quotas/total/requests", json={"vcpus": 4}, headers=kim).json()
    api.post(f"/api/v1/quota-requests/{asked['id']}:deny")  # the Owner, through the workspace token
    with api.app.state.store.session() as session:
        from sqlalchemy import select

        from cible.server.store.rows import LifecycleRow

        moves = session.execute(select(LifecycleRow.to_state, LifecycleRow.by).where(
            LifecycleRow.entity == "quota_request")).all()
    assert ("Denied", current_user()) in [tuple(m) for m in moves]


def test_an_email_names_one_user_and_an_oidc_sign_in_finds_them_by_it(api: TestClient) -> None:
    made = api.post("/api/v1/users", json={"name": "ann", "role": "reader", "email": "Ann@Example.org"})
    assert made.json()["email"] == "ann@example.org"
    taken = api.post("/api/v1/users", json={"name": "anne", "role": "reader", "email": "ann@example.org"})
    assert taken.status_code == 409 and "email" in taken.json()["error"]["message"]
    bad = api.post("/api/v1/users", json={"name": "bo", "role": "reader", "email": "not an address"})
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "email"
    users = api.app.state.users
    assert users.user_for_claims({"email": "ANN@example.org", "email_verified": True}, None) == "ann"
    with pytest.raises(Exception, match="no user of this workspace has the e-mail address zed@example.org"):
        users.user_for_claims({"email": "zed@example.org"}, None)
    with pytest.raises(Exception, match="no verified e-mail"):
        users.user_for_claims({"email": "ann@example.org", "email_verified": False}, None)
    assert users.user_for_claims({"email": "zed@example.org"}, "reader") == "zed@example.org"  # a default role: added
    assert api.get("/api/v1/users/zed@example.org").json()["role"] == "Reader"
    cleared = api.patch("/api/v1/users/ann", json={"email": ""}).json()
    assert cleared["email"] is None and cleared["role"] == "Reader"


def test_a_token_says_when_it_was_last_used(api: TestClient, clock) -> None:  # noqa: ANN001
    headers = as_user(api, "uma", "reader")
    assert api.get("/api/v1/tokens", params={"user": "uma"}).json()["value"][0]["last_used_at"] is None
    api.get("/api/v1/jobs", headers=headers)
    used = api.get("/api/v1/tokens", params={"user": "uma"}).json()["value"][0]["last_used_at"]
    assert used is not None and used.startswith(clock.now().isoformat()[:19])


def test_a_pipeline_step_on_another_users_instance_is_refused_at_submit_and_an_owners_is_not(api: TestClient) -> None:
    api.put("/api/v1/computes/vals-ci", json={
        "type": "computeinstance", "size": "Standard_DS1_v2",
        "create_on_behalf_of": {"user_tenant_id": "t", "user_object_id": "val"}})
    wes = as_user(api, "wes", "data-scientist")
    pipeline = {"type": "pipeline", "jobs": {
        "prep": {"type": "command", "command": "echo prep > ${{outputs.out}}/x", "compute": "serverless",
                 "outputs": {"out": {"type": "uri_folder"}}},
        "train": {"type": "command", "command": "echo train", "compute": "azureml:vals-ci",
                  "inputs": {"after": "${{parent.jobs.prep.outputs.out}}"}}}}
    refused = api.put("/api/v1/jobs/wes-pipe", json=pipeline, headers=wes)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["message"].startswith("jobs.train.compute: compute instance 'vals-ci' is assigned "
                                                         "to user 'val'")
    defaulted = {"type": "pipeline", "settings": {"default_compute": "azureml:vals-ci"},
                 "jobs": {"one": {"type": "command", "command": "echo"}}}
    refused = api.put("/api/v1/jobs/wes-pipe2", json=defaulted, headers=wes)
    assert refused.status_code == 403 and "settings.default_compute" in refused.text
    assert api.put("/api/v1/jobs/owners-pipe", json=pipeline).status_code == 200  # the Owner's workspace token
    jobs = api.app.state.jobs
    assert jobs.is_admin(None) and jobs.is_admin("someone-without-a-user-row") and not jobs.is_admin("wes")
