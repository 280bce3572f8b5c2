"""Archiving and restoring asset versions and whole assets, and a model's files for `model download`,
over the REST API, in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from api_support import api_client, error_of, upload
from fastapi.testclient import TestClient

ENV = {"image": "python:3.11-slim"}


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        yield client


def register(api: TestClient, kind: str, name: str, count: int) -> None:
    body = ENV if kind == "environments" else {"type": "uri_file", "path": f"{upload(api, {'d.csv': b'a'})}/d.csv"}
    for _ in range(count):
        created = api.post(f"/api/v1/{kind}/{name}/versions", json=body)
        assert created.status_code == 200, created.text


def versions(api: TestClient, kind: str, name: str, **params: bool) -> list[tuple[str, bool]]:
    page = api.get(f"/api/v1/{kind}/{name}/versions", params=params).json()["value"]
    return [(v["version"], v["is_archived"]) for v in page]


def listed(api: TestClient, kind: str, **params: bool) -> list[tuple[str, str]]:
    return [(a["name"], a["version"]) for a in api.get(f"/api/v1/{kind}", params=params).json()["value"]]


@pytest.mark.parametrize("kind", ["data", "environments", "models"])
def test_an_archived_version_is_hidden_from_lists_and_latest_but_got_by_version(api: TestClient, kind: str):
    if kind == "models":
        uri = upload(api, {"m.pkl": b"x"})
        for _ in range(2):
            api.post("/api/v1/models/a/versions", json={"path": f"{uri}/m.pkl"})
    else:
        register(api, kind, "a", 2)
    archived = api.post(f"/api/v1/{kind}/a/versions/2:archive")
    assert archived.status_code == 200 and archived.json()["is_archived"] is True
    assert versions(api, kind, "a") == [("1", False)]
    assert versions(api, kind, "a", include_archived=True) == [("2", True), ("1", False)]
    assert versions(api, kind, "a", archived_only=True) == [("2", True)]
    assert api.get(f"/api/v1/{kind}/a/versions/latest").json()["version"] == "1"
    by_version = api.get(f"/api/v1/{kind}/a/versions/2")
    assert by_version.status_code == 200 and by_version.json()["is_archived"] is True
    assert listed(api, kind) == [("a", "1")]  # the asset by its newest active version
    restored = api.post(f"/api/v1/{kind}/a/versions/2:restore")
    assert restored.status_code == 200 and restored.json()["is_archived"] is False
    assert api.get(f"/api/v1/{kind}/a/versions/latest").json()["version"] == "2"


def test_latest_in_a_job_skips_archived_versions(api: TestClient):
    uri = upload(api, {"one.csv": b"1", "two.csv": b"2"})
    api.put("/api/v1/data/iris/versions/1", json={"type": "uri_file", "path": f"{uri}/one.csv"})
    api.put("/api/v1/data/iris/versions/2", json={"type": "uri_file", "path": f"{uri}/two.csv"})
    api.post("/api/v1/data/iris/versions/latest:archive")  # the label: version 2
    job = {"command": "cat ${{inputs.d}}", "compute": "local",
           "inputs": {"d": {"type": "uri_file", "path": "azureml:iris@latest"}}}
    assert api.put("/api/v1/jobs/j", json=job).status_code == 200
    _, run = api.app.state.jobs.run_handle("j")
    assert run.plan["inputs"]["d"]["uri"].endswith("/one.csv")
    pinned = {**job, "inputs": {"d": {"type": "uri_file", "path": "azureml:iris:2"}}}
    assert api.put("/api/v1/jobs/k", json=pinned).status_code == 200  # an archived version still by version


def test_with_every_version_archived_latest_says_so_and_the_asset_lists_as_archived(api: TestClient):
    register(api, "data", "gone", 2)
    register(api, "data", "kept", 1)
    for version in ("1", "2"):
        api.post(f"/api/v1/data/gone/versions/{version}:archive")
    latest = api.get("/api/v1/data/gone/versions/latest")
    assert latest.status_code == 404
    message = error_of(latest)["message"]
    assert "every version" in message and "versions: 1, 2" in message and "restore" in message
    assert listed(api, "data") == [("kept", "1")]
    assert listed(api, "data", archived_only=True) == [("gone", "2")]
    assert listed(api, "data", include_archived=True) == [("gone", "2"), ("kept", "1")]


def test_archiving_a_whole_asset_hides_every_version_and_later_ones(api: TestClient):
    register(api, "data", "whole", 2)
    api.post("/api/v1/data/whole/versions/1:archive")  # archived alone first: stays so after the restore
    archived = api.post("/api/v1/data/whole:archive")
    assert archived.status_code == 200 and archived.json()["is_archived"] is True
    assert api.post("/api/v1/data/whole:archive").status_code == 200  # idempotent
    assert versions(api, "data", "whole") == []
    assert versions(api, "data", "whole", include_archived=True) == [("2", True), ("1", True)]
    later = api.post("/api/v1/data/whole/versions", json={"type": "uri_file",
                                                         "path": f"{upload(api, {'x': b'x'})}/x"})
    assert later.status_code == 200 and later.json()["is_archived"] is True
    latest = api.get("/api/v1/data/whole/versions/latest")
    assert latest.status_code == 404 and "whole data asset is archived" in error_of(latest)["message"]
    one = api.post("/api/v1/data/whole/versions/2:restore")
    assert one.status_code == 409
    assert "as a whole" in error_of(one)["message"] and "restore -n whole" in error_of(one)["message"]
    assert api.post("/api/v1/data/whole:restore").json()["is_archived"] is False
    assert versions(api, "data", "whole") == [("3", False), ("2", False)]
    assert versions(api, "data", "whole", archived_only=True) == [("1", True)]


def test_archive_refusals_are_4xx_with_what_and_how(api: TestClient):
    register(api, "data", "d", 1)
    for url, status, needle in (("/api/v1/data/nope:archive", 404, "nope"),
                                ("/api/v1/data/d/versions/9:archive", 404, "versions: 1"),
                                ("/api/v1/data/bad%20name:archive", 400, "asset name"),
                                ("/api/v1/widgets/d:archive", 422, "kind")):
        response = api.post(url)
        assert response.status_code == status, response.text
        assert needle in error_of(response)["message"]
    both = api.get("/api/v1/data", params={"include_archived": True, "archived_only": True})
    assert both.status_code == 400 and "include_archived" in error_of(both)["message"]


def test_model_files_are_laid_out_as_az_ml_model_download(api: TestClient):
    uri = upload(api, {"model/weights.pkl": b"w", "model/sub/conf.json": b"{}"})
    api.put("/api/v1/models/net/versions/1", json={"path": f"{uri}/model"})
    api.put("/api/v1/models/net/versions/2", json={"path": f"{uri}/model/weights.pkl"})
    folder = api.get("/api/v1/models/net/versions/1/files").json()
    assert [f["path"] for f in folder["value"]] == ["net/model/sub/conf.json", "net/model/weights.pkl"]
    single = api.get("/api/v1/models/net/versions/latest/files").json()
    assert single["value"] == [{"path": "net/weights.pkl", "size": 1}]
    assert api.get("/api/v1/models/net/versions/1/files/net/model/sub/conf.json").content == b"{}"
    assert api.get("/api/v1/models/net/versions/2/files/net/weights.pkl").content == b"w"
    api.post("/api/v1/models/net/versions/1:archive")
    assert api.get("/api/v1/models/net/versions/1/files").json()["count"] == 2  # archived: still by version
    for path, status in (("net/model/nope", 404), ("other/weights.pkl", 404), ("net/model/../../etc/passwd", 404),
                         ("net/model/sub/..%2F..%2Fweights.pkl", 400)):
        response = api.get(f"/api/v1/models/net/versions/1/files/{path}")
        assert response.status_code == status, (path, response.text)
        error_of(response)
    assert api.get("/api/v1/models/ghost/versions/1/files").status_code == 404


@pytest.mark.parametrize("path", ["https://example.com/models/net.pkl", "runs:/0123abcd/model",
                                  "wasbs://models@account.blob.core.windows.net/net"])
def test_a_model_outside_the_datastore_is_not_downloaded_and_says_where_it_is(api: TestClient, path: str):
    registered = api.put("/api/v1/models/far/versions/1", json={"path": path})
    assert registered.status_code == 200, registered.text
    for url in ("/api/v1/models/far/versions/1/files", "/api/v1/models/far/versions/1/files/far/net.pkl"):
        response = api.get(url)
        assert response.status_code == 400, response.text
        message = error_of(response)["message"]
        assert path in message and "outside the workspace's datastore" in message and "fetch" in message


def test_restore_by_the_latest_label_is_refused_and_names_the_archived_versions(api: TestClient):
    register(api, "data", "d", 3)
    for version in ("2", "3"):
        api.post(f"/api/v1/data/d/versions/{version}:archive")
    refused = api.post("/api/v1/data/d/versions/latest:restore")
    assert refused.status_code == 400, refused.text
    message = error_of(refused)["message"]
    assert "--version" in message and "archived versions: 3, 2" in message
    assert versions(api, "data", "d", archived_only=True) == [("3", True), ("2", True)]  # nothing restored
    assert api.post("/api/v1/data/d/versions/3:restore").json()["is_archived"] is False
    assert api.post("/api/v1/data/ghost/versions/latest:restore").status_code == 404
