"""Names and paths over the REST API, on SQLite and PostgreSQL: a name Azure refuses is a 400 that
names the field, nothing is stored, and no name or path reaches a file outside its folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from api_support import api_client, error_of, upload
from fastapi.testclient import TestClient

from cible.server.store.rows import JobRow
from cible.workspace import WorkspacePaths

INSTANCE = {"type": "computeinstance", "size": "Standard_DS1_v2"}
CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 1}
HELLO = {"command": "echo hello", "compute": "local"}
ESCAPE = "azureml://datastores/workspaceblobstore/paths/../../../../etc"
# As a URL holds them: %2e%2e is `..` once decoded, which a client would otherwise fold away.
# (A `/`, even as %2F, is no name at all: the route does not match, a 404.)
BAD_URL_NAMES = ["%2e%2e", "%2E%2E", "%2e", "%00", "a%00b", "x" * 300, "%E2%80%A4%E2%80%A4", "a%5Cb", "a%20b"]


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        paths(client).ensure()
        yield client


def paths(api: TestClient) -> WorkspacePaths:
    return api.app.state.artifacts.paths


def home(api: TestClient) -> Path:
    return paths(api).home


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def refused(response, field: str | None = "name") -> str:  # noqa: ANN001
    """The message of a 400 naming `field` (None: a NUL in the URL, refused before any route)."""
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == "InvalidRequest", error
    assert field is None or error["details"] == {"field": field}, error
    return error["message"]


def field_of(url_part: str, field: str = "name") -> str | None:
    return None if "%00" in url_part else field


# -- computes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_URL_NAMES + ["cpu-cluster-1", "c" * 25])
def test_a_compute_azure_would_refuse_is_a_400_and_nothing_is_created(api: TestClient, name: str):
    before = tree(home(api))
    for body in (INSTANCE, CLUSTER):
        message = refused(api.put(f"/api/v1/computes/{name}", json=body), field_of(name))
        assert field_of(name) is None or ("compute name" in message and "rename it" in message)
    assert [c["name"] for c in api.get("/api/v1/computes").json()["value"]] == ["local"]
    assert tree(home(api)) == before


@pytest.mark.parametrize("name", ["%2e%2e", "%2e%2e%2f%2e%2e", "..%2F..", "%00", "x" * 300])
def test_deleting_or_reading_a_bad_compute_name_touches_nothing(api: TestClient, name: str):
    (home(api) / "token-like").write_text("keep")
    before = tree(home(api))
    for response in (api.delete(f"/api/v1/computes/{name}"), api.get(f"/api/v1/computes/{name}"),
                     api.patch(f"/api/v1/computes/{name}", json={"max_instances": 2})):
        assert response.status_code in (400, 404), response.text
        error_of(response)
    assert tree(home(api)) == before and (home(api) / "token-like").read_text() == "keep"


def test_deleting_an_instance_removes_its_home_and_nothing_else(api: TestClient):
    for name in ("ci", "ci2"):
        assert api.put(f"/api/v1/computes/{name}", json=INSTANCE).status_code == 200
        (paths(api).instance_home(name) / "notebook.ipynb").parent.mkdir(parents=True)
        (paths(api).instance_home(name) / "notebook.ipynb").write_text("{}")
    assert api.delete("/api/v1/computes/ci").status_code == 204
    assert not (home(api) / "instances" / "ci").exists()
    assert (paths(api).instance_home("ci2") / "notebook.ipynb").read_text() == "{}"
    assert (home(api) / "runs").is_dir()


# -- jobs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_URL_NAMES)
def test_a_job_azure_would_refuse_is_a_400_and_nothing_is_stored(api: TestClient, name: str):
    message = refused(api.put(f"/api/v1/jobs/{name}", json=HELLO), field_of(name))
    assert field_of(name) is None or ("job name" in message and "rename it" in message)
    assert api.get("/api/v1/jobs").json()["count"] == 0
    assert list((home(api) / "runs").iterdir()) == []


def test_bad_names_in_a_job_body_are_400s_naming_their_field(api: TestClient):
    assert "experiment name" in refused(api.put("/api/v1/jobs/j1", json={**HELLO, "experiment_name": "../x"}),
                                        "experiment_name")
    refused(api.put("/api/v1/jobs/j1", json={**HELLO, "name": ".."}))
    for kind in ("inputs", "outputs"):
        body = {**HELLO, kind: {"../x": {"type": "uri_folder", "path": "https://example.com/d/"}}
                if kind == "inputs" else {"../x": {"type": "uri_folder"}}}
        refused(api.put("/api/v1/jobs/j1", json=body), f"{kind}.../x")
    assert api.get("/api/v1/jobs").json()["count"] == 0


def test_a_serverless_job_name_leaves_room_for_its_pool_name(api: TestClient):
    name = "j" * 250  # a valid job name; serverless:<name> would not fit the store
    message = refused(api.put(f"/api/v1/jobs/{name}", json={"command": "echo", "compute": "serverless"}))
    assert "at most 244" in message
    assert api.put(f"/api/v1/jobs/{name}", json=HELLO).status_code == 200  # on other computes it is fine


@pytest.mark.parametrize("name", ["%2e%2e", "%00", "x" * 300, "a%2Fb"])
def test_reading_or_deleting_a_bad_job_name_is_a_clean_4xx(api: TestClient, name: str):
    for response in (api.get(f"/api/v1/jobs/{name}"), api.delete(f"/api/v1/jobs/{name}"),
                     api.get(f"/api/v1/jobs/{name}/logs"), api.get(f"/api/v1/jobs/{name}/files"),
                     api.get(f"/api/v1/jobs/{name}/files/artifacts/x"), api.post(f"/api/v1/jobs/{name}:cancel")):
        assert response.status_code in (400, 404), response.text
        error_of(response)


@pytest.mark.parametrize(("path", "field"), [
    (ESCAPE, "outputs.o.path"),
    ("azureml://datastores/workspaceblobstore/paths/a/../../b", "outputs.o.path"),
])
def test_a_job_output_outside_the_datastore_is_a_400(api: TestClient, path: str, field: str):
    message = refused(api.put("/api/v1/jobs/j1", json={**HELLO, "outputs": {"o": {"path": path}}}), field)
    assert "inside" in message
    assert api.get("/api/v1/jobs/j1").status_code == 404


def test_a_job_input_outside_the_datastore_is_a_400(api: TestClient):
    body = {**HELLO, "inputs": {"i": {"type": "uri_file", "path": ESCAPE + "/passwd"}}}
    refused(api.put("/api/v1/jobs/j1", json=body), "inputs.i.path")
    body = {**HELLO, "inputs": {"i": {"type": "uri_folder", "path": "azureml://jobs/x/outputs/o/paths/../../.."}}}
    refused(api.put("/api/v1/jobs/j1", json=body), "inputs.i.path")


def test_an_output_path_that_stays_inside_is_normalised(api: TestClient):
    path = "azureml://datastores/workspaceblobstore/paths/a/./b/../c/"
    job = api.put("/api/v1/jobs/j1", json={**HELLO, "outputs": {"o": {"path": path}}})
    assert job.status_code == 200, job.text
    plan = api.app.state.jobs.run_handle("j1")[1].plan
    assert plan["outputs"]["o"]["local_path"] == str(paths(api).datastore() / "a" / "c")


# -- assets -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["data", "models"])
def test_an_asset_path_outside_the_datastore_is_a_400(api: TestClient, kind: str):
    for path in (ESCAPE, ESCAPE + "/passwd", "azureml://jobs/j/outputs/o/paths/../../x"):
        assert "inside" in refused(api.post(f"/api/v1/{kind}/x/versions", json={"path": path}), "path")
    snapshot = upload(api, {"d.csv": b"a\n"})
    refused(api.post(f"/api/v1/{kind}/x/versions", json={"path": f"{snapshot}/../../etc"}), "path")
    refused(api.post(f"/api/v1/{kind}/x/versions", json={"path": "cible://snapshots/../etc"}), "path")
    assert api.get(f"/api/v1/{kind}/x/versions").json()["count"] == 0


def test_an_asset_path_that_stays_inside_is_stored_normalised(api: TestClient):
    snapshot = upload(api, {"d.csv": b"a\n"})
    created = api.post("/api/v1/data/iris/versions", json={"type": "uri_file", "path": f"{snapshot}/d.csv"}).json()
    again = api.post("/api/v1/data/iris2/versions", json={"type": "uri_file",
                                                           "path": created["path"].replace("/d.csv", "/x/../d.csv")})
    assert again.status_code == 200, again.text
    assert again.json()["path"] == created["path"]


@pytest.mark.parametrize("name", BAD_URL_NAMES)
def test_an_asset_azure_would_refuse_is_a_400(api: TestClient, name: str):
    body = {"path": "https://example.com/d.csv", "type": "uri_file"}
    message = refused(api.post(f"/api/v1/data/{name}/versions", json=body), field_of(name))
    assert field_of(name) is None or "asset name" in message
    refused(api.put(f"/api/v1/models/{name}/versions/1", json=body), field_of(name))
    assert api.get("/api/v1/data").json()["count"] == 0


@pytest.mark.parametrize("version", ["latest", "%2e%2e", "1%00", "v" * 65])
def test_an_asset_version_azure_would_refuse_is_a_400(api: TestClient, version: str):
    body = {"path": "https://example.com/d.csv", "type": "uri_file"}
    refused(api.put(f"/api/v1/data/d/versions/{version}", json=body), field_of(version, "version"))
    refused(api.post("/api/v1/data/d/versions", json={**body, "version": version.replace("%00", "\0")}), "version")
    assert api.get("/api/v1/data").json()["count"] == 0


# -- the files of a job ---------------------------------------------------------------------------------------


@pytest.fixture
def job_with_files(api: TestClient, tmp_path: Path) -> Path:
    assert api.put("/api/v1/jobs/j1", json={**HELLO, "outputs": {"o": {}}}).status_code == 200
    artifacts = paths(api).run_dir("j1") / "artifacts"
    (artifacts / "outputs").mkdir(parents=True)
    (artifacts / "outputs" / "ok.txt").write_text("fine")
    (artifacts / "outputs" / "passwd").symlink_to("/etc/passwd")
    (artifacts / "outputs" / "etc").symlink_to("/etc")
    output = Path(api.app.state.jobs.run_handle("j1")[1].plan["outputs"]["o"]["local_path"])
    output.mkdir(parents=True)
    (output / "model.bin").write_text("weights")
    return artifacts


@pytest.mark.parametrize("path", [
    "artifacts/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "artifacts/outputs/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "named-outputs/o/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "artifacts/%2Fetc%2Fpasswd", "artifacts/outputs/passwd", "artifacts/outputs/etc/passwd", "artifacts/a%00b",
])
def test_the_files_api_never_serves_a_file_outside_the_job(api: TestClient, job_with_files: Path, path: str):
    response = api.get(f"/api/v1/jobs/j1/files/{path}")
    assert response.status_code in (400, 404), response.text
    assert b"root:" not in response.content
    error_of(response)


def test_the_files_api_lists_and_serves_the_jobs_own_files_only(api: TestClient, job_with_files: Path):
    listed = {f["path"] for f in api.get("/api/v1/jobs/j1/files", params={"all": True}).json()["value"]}
    assert listed == {"artifacts/outputs/ok.txt", "named-outputs/o/model.bin"}
    assert api.get("/api/v1/jobs/j1/files/artifacts/outputs/ok.txt").text == "fine"
    assert api.get("/api/v1/jobs/j1/files/named-outputs/o/model.bin").text == "weights"


# Each a file name, nothing more. (Not `%41`: Starlette's TestClient decodes a path twice, a real
# server once; tests/integration/test_sdk.py has such a name.)
ODD_NAMES = ["a#b.txt", "x?y.txt", "100%.txt", "sp ace.txt", "semi;colon.txt"]


def sdk_client(api: TestClient):  # noqa: ANN201
    """The SDK's HTTP client, talking to the in-process app."""
    from cible.client.http import API, WorkspaceClient

    client = WorkspaceClient("http://testserver", "t")
    client._http.close()
    client._http = TestClient(api.app, base_url=f"http://testserver{API}", headers=dict(api.headers))
    return client


def test_the_sdk_downloads_files_whose_names_hold_url_characters(api: TestClient, job_with_files: Path,
                                                                  tmp_path: Path):
    from cible.sdk.assets import ModelOperations
    from cible.sdk.jobs import JobOperations

    for name in ODD_NAMES:
        (job_with_files / "outputs" / name).write_text(name)
    written = JobOperations(sdk_client(api)).download("j1", download_path=tmp_path / "job", all=True)
    got = {p.relative_to(tmp_path / "job").as_posix(): p.read_text() for p in written}
    assert {f"artifacts/outputs/{n}": n for n in ODD_NAMES}.items() <= got.items()

    uri = upload(api, {f"model/{n}": n.encode() for n in ODD_NAMES})
    assert api.put("/api/v1/models/odd/versions/1", json={"path": f"{uri}/model"}).status_code == 200
    written = ModelOperations(sdk_client(api)).download("odd", "1", tmp_path / "model")
    got = {p.relative_to(tmp_path / "model").as_posix(): p.read_text() for p in written}
    assert got == {f"odd/model/{n}": n for n in ODD_NAMES}


def test_a_plan_stored_before_paths_were_checked_serves_nothing_outside(api: TestClient):
    """A job submitted before this check kept `paths/../../../../etc` as its output's folder."""
    assert api.put("/api/v1/jobs/old", json={**HELLO, "outputs": {"o": {}}}).status_code == 200
    with api.app.state.store.session() as session:
        row = session.get(JobRow, "old")
        plan = {**row.run.plan, "outputs": {"o": {"type": "uri_folder", "mode": "rw_mount", "uri": ESCAPE,
                                                  "local_path": "/etc"}}}
        row.run = row.run.model_copy(update={"plan": plan})
    listed = api.get("/api/v1/jobs/old/files", params={"all": True}).json()["value"]
    assert not any(f["path"].startswith("named-outputs/") for f in listed)
    response = api.get("/api/v1/jobs/old/files/named-outputs/o/passwd")
    assert response.status_code == 404 and b"root:" not in response.content
    assert os.path.exists("/etc/passwd")  # the file was there to be served, and was not
