"""Every list route answers a page ({"value", "count", "next_skip"}) of at most `top` items, on SQLite
and PostgreSQL; and the SDK, talking to the app in-process, follows the pages to the end."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from api_support import TOKEN, api_client, error_of
from fastapi.testclient import TestClient

from cible.sdk import MLClient
from cible.server.store.rows import NodeRow, NodeStateRow

CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2}
DATA = {"type": "uri_file", "path": "https://example.com/d.csv"}


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        yield client


def ok(response):  # noqa: ANN001, ANN201
    assert response.status_code == 200, response.text
    return response.json()


def add_nodes(api: TestClient, compute: str, lives_s: list[int], *, removed: bool = True) -> None:
    """Nodes of `compute` at 3.6/h that were idle `lives_s` seconds each (then removed, unless not)."""
    t0 = api.app.state.clock.now() - timedelta(hours=1)
    with api.app.state.store.session() as session:
        for i, life in enumerate(lives_s):
            node_id = f"{compute}-n{i}"
            session.add(NodeRow(node_id=node_id, compute=compute, provider="local",
                                state="removed" if removed else "idle", info={"price_per_hour": 3.6},
                                created_at=t0 + timedelta(seconds=i), updated_at=t0))
            session.flush()
            session.add(NodeStateRow(node_id=node_id, from_state=None, to_state="idle", at=t0))
            if removed:
                session.add(NodeStateRow(node_id=node_id, from_state="idle", to_state="removed",
                                         at=t0 + timedelta(seconds=life)))


# Each makes three records and says where they are listed and what names each item.
def three_assets(api: TestClient) -> tuple[str, Callable]:
    for name in ("c", "a", "b"):
        ok(api.post(f"/api/v1/data/{name}/versions", json=DATA))
    ok(api.post("/api/v1/data/a/versions", json=DATA))  # a second version: still one line for `a`
    return "/api/v1/data", lambda item: (item["name"], item["version"])


def three_versions(api: TestClient) -> tuple[str, Callable]:
    for _ in range(3):
        ok(api.post("/api/v1/data/d/versions", json=DATA))
    return "/api/v1/data/d/versions", lambda item: item["version"]


def three_computes(api: TestClient) -> tuple[str, Callable]:  # `local` and two clusters
    for name in ("cpu-b", "cpu-a"):
        ok(api.put(f"/api/v1/computes/{name}", json=CLUSTER))
    return "/api/v1/computes", lambda item: item["name"]


def three_nodes(api: TestClient) -> tuple[str, Callable]:
    ok(api.put("/api/v1/computes/cpu", json=CLUSTER))
    add_nodes(api, "cpu", [10, 20, 30], removed=False)
    return "/api/v1/computes/cpu/nodes", lambda item: item["node_id"]


def three_quota_requests(api: TestClient) -> tuple[str, Callable]:
    for vcpus in (4, 8, 16):
        ok(api.post("/api/v1/quotas/total/requests", json={"vcpus": vcpus}))
    return "/api/v1/quotas", lambda item: item["requested_vcpus"]


def three_cost_lines(api: TestClient) -> tuple[str, Callable]:
    for compute, life in (("x", 10), ("y", 30), ("z", 20)):
        add_nodes(api, compute, [life])
    return "/api/v1/costs", lambda item: item["key"]


def three_jobs(api: TestClient) -> tuple[str, Callable]:
    for name in ("j1", "j2", "j3"):
        ok(api.put(f"/api/v1/jobs/{name}", json={"command": "echo", "compute": "local"}))
    return "/api/v1/jobs", lambda item: item["name"]


def three_job_files(api: TestClient) -> tuple[str, Callable]:
    ok(api.put("/api/v1/jobs/j1", json={"command": "echo", "compute": "local"}))
    outputs = api.app.state.artifacts.paths.run_dir("j1") / "artifacts" / "outputs"
    outputs.mkdir(parents=True)
    for name in ("b.txt", "a.txt", "c.txt"):
        (outputs / name).write_text(name)
    return "/api/v1/jobs/j1/files", lambda item: item["path"]


LISTS = [three_assets, three_versions, three_computes, three_nodes, three_quota_requests, three_cost_lines,
         three_jobs, three_job_files]


@pytest.mark.parametrize("make", LISTS, ids=lambda make: make.__name__)
def test_a_list_answers_pages_of_at_most_top_items(api: TestClient, make: Callable):
    route, key = make(api)
    whole = ok(api.get(route, params={"top": 1000}))
    assert (whole["count"], len(whole["value"]), whole["next_skip"]) == (3, 3, None)
    assert len({key(item) for item in whole["value"]}) == 3

    first = ok(api.get(route, params={"top": 2}))
    assert (first["count"], first["value"], first["next_skip"]) == (3, whole["value"][:2], 2)
    rest = ok(api.get(route, params={"top": 2, "skip": first["next_skip"]}))
    assert (rest["count"], rest["value"], rest["next_skip"]) == (3, whole["value"][2:], None)
    for past in (3, 50, 2**31 - 1):  # past the end: an empty last page
        beyond = ok(api.get(route, params={"skip": past}))
        assert (beyond["count"], beyond["value"], beyond["next_skip"]) == (3, [], None)


@pytest.mark.parametrize("make", LISTS, ids=lambda make: make.__name__)
@pytest.mark.parametrize("params", [{"top": 1001}, {"top": 0}, {"skip": -1}, {"skip": 2**31}, {"top": "many"}])
def test_a_page_size_or_skip_out_of_range_is_a_422(api: TestClient, make: Callable, params: dict):
    route, _ = make(api)
    response = api.get(route, params=params)
    assert response.status_code == 422, response.text
    assert next(iter(params)) in str(error_of(response)["details"])


def test_the_orders_are_the_documented_ones(api: TestClient):
    three_assets(api)
    assert [(a["name"], a["version"]) for a in ok(api.get("/api/v1/data"))["value"]] == [
        ("a", "2"), ("b", "1"), ("c", "1")]  # each asset's latest version, by name
    three_computes(api)
    assert [c["name"] for c in ok(api.get("/api/v1/computes"))["value"]] == ["local", "cpu-a", "cpu-b"]
    three_cost_lines(api)
    assert [line["key"] for line in ok(api.get("/api/v1/costs"))["value"]] == ["y", "z", "x"]  # dearest first
    three_job_files(api)
    assert [f["path"] for f in ok(api.get("/api/v1/jobs/j1/files"))["value"]] == [
        "artifacts/outputs/a.txt", "artifacts/outputs/b.txt", "artifacts/outputs/c.txt"]


def test_the_pages_of_a_cost_report_are_cut_from_the_report_of_its_first_page(api: TestClient):
    add_nodes(api, "x", [0], removed=False)  # still alive: its cost grows with the clock
    add_nodes(api, "y", [0], removed=False)
    first = ok(api.get("/api/v1/costs", params={"top": 1}))
    api.app.state.clock.advance(3600)
    later = ok(api.get("/api/v1/costs", params={"top": 1, "skip": 1, "until": first["until"]}))
    assert (later["until"], later["total"]) == (first["until"], first["total"])
    now = ok(api.get("/api/v1/costs"))
    assert now["total"] > first["total"]
    future = (api.app.state.clock.now() + timedelta(days=1)).isoformat()
    assert ok(api.get("/api/v1/costs", params={"until": future}))["until"] == now["until"]  # never past now


def test_the_sdk_follows_the_pages_to_the_end(api: TestClient, tmp_path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001
    three_assets(api)
    three_quota_requests(api)
    add_nodes(api, "x", [10])
    add_nodes(api, "y", [0], removed=False)  # its cost grows: every page is asked as of the first's time
    add_nodes(api, "z", [20])
    three_job_files(api)
    client = MLClient(url="http://testserver", token=TOKEN)
    # The SDK's own HTTP client, with the app in-process behind it.
    monkeypatch.setattr(client._client, "_http", TestClient(api.app, base_url="http://testserver/api/v1",
                                                            headers={"Authorization": f"Bearer {TOKEN}"}))
    monkeypatch.setattr(client._client, "page_size", 2)
    clock, asked = api.app.state.clock, []
    real_json = client._client.json

    def json_then_tick(method: str, path: str, **kwargs):  # noqa: ANN202, ANN003
        asked.append((path, kwargs.get("params")))
        clock.advance(60)
        return real_json(method, path, **kwargs)

    monkeypatch.setattr(client._client, "json", json_then_tick)
    assert [a["name"] for a in client.data.list()] == ["a", "b", "c"]
    assert [r["requested_vcpus"] for r in client.quotas.get()["requests"]] == [4, 8, 16]
    report = client.quotas.cost_report()
    assert [line["key"] for line in report["lines"]] == ["y", "z", "x"]
    assert report["total"] == pytest.approx(sum(line["cost"] for line in report["lines"]), abs=1e-5)
    assert "value" not in report and "next_skip" not in report
    first_page, second_page = [params for path, params in asked if path == "/costs"]
    assert "until" not in first_page and second_page["until"] == report["until"]
    assert [p.name for p in client.jobs.download("j1", download_path=tmp_path / "dl")] == ["a.txt", "b.txt", "c.txt"]
    assert [j["name"] for j in client.jobs.list(max_results=1)] == ["j1"]
