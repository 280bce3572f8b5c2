"""Every route's answer has a response model in /openapi.json, and the models change no answer:
the same keys, values and key order as the services give."""

from __future__ import annotations

import json
from importlib import import_module
from pkgutil import iter_modules
from typing import Any

import pytest
from api_support import api_client, upload
from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from cible.server import routers, schemas
from cible.server.schemas.assets import Asset, AssetPage
from cible.server.schemas.common import Envelope, Page
from cible.server.schemas.computes import Compute, ComputePage, ProviderList
from cible.server.schemas.jobs import Job, JobPage
from cible.server.schemas.quotas import UsagePage

CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2,
           "idle_time_before_scale_down": 120}
HELLO = {"command": "echo hello", "compute": "local", "tags": {"team": "a"}}
SCHEMA_REF = "#/components/schemas/"


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:
    with api_client(migrated_db_url, tmp_path) as client:
        yield client


def _routes() -> list[APIRoute]:
    """The routes of every router module (the app mounts them; FastAPI keeps its own view private)."""
    found = []
    for info in iter_modules(routers.__path__):
        router = getattr(import_module(f"{routers.__name__}.{info.name}"), "router", None)
        if isinstance(router, APIRouter):
            found += [route for route in router.routes if isinstance(route, APIRoute)]
    return found


def _operations(spec: dict[str, Any]):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


# -- the OpenAPI document ------------------------------------------------------------------------

def test_every_json_answer_in_the_openapi_document_is_a_named_model(api: TestClient):
    spec = api.get("/api/v1/openapi.json").json()
    models = spec["components"]["schemas"]
    problems = []
    for name, operation in _operations(spec):
        answers = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
        if not answers:
            problems.append(f"{name}: no 2xx answer")
        for code, answer in answers.items():
            content = answer.get("content") or {}
            if not content and code != "204":
                problems.append(f"{name} {code}: no content type (only a 204 answers nothing)")
            for media, body in content.items():
                if media != "application/json":
                    continue  # files and streams: their bytes
                ref = (body.get("schema") or {}).get("$ref", "")
                if not ref.startswith(SCHEMA_REF):
                    problems.append(f"{name} {code}: {body.get('schema')} is not a named model")
                elif models[ref.removeprefix(SCHEMA_REF)].get("type") != "object":
                    problems.append(f"{name} {code}: {ref} is not an object")
    assert not problems, "\n".join(problems)


def test_the_document_lists_every_route_and_names_the_fields(api: TestClient):
    spec = api.get("/api/v1/openapi.json").json()
    documented = {name for name, _ in _operations(spec)}
    routes = {f"{method} {route.path_format}" for route in _routes() if route.include_in_schema
              for method in route.methods}
    assert len(routes) > 40 and routes <= documented
    job = spec["components"]["schemas"]["Job"]
    assert {"name", "status", "status_history", "cost"} <= set(job["properties"])
    assert job["additionalProperties"] is True  # the spec's fields pass through
    page = spec["components"]["schemas"]["Page_Job_"]
    assert set(page["properties"]) == {"value", "count", "next_skip"}


def test_routes_with_a_model_never_add_fields_the_service_left_out():
    """A declared field the service omitted must stay out of the answer (never a null)."""
    for route in _routes():
        if route.response_model is not None:
            assert route.response_model_exclude_unset, route.path


# -- the envelopes -------------------------------------------------------------------------------

def test_an_envelope_keeps_keys_order_numbers_and_extra_fields():
    raw = {"value": [{"spec_field": {"a": 1}, "name": "j", "type": "command", "display_name": "d",
                      "experiment_name": "e", "status": "Queued", "_private": 1,
                      "cost": {"estimate": None, "so_far": 0}}], "count": 1, "next_skip": None}
    page = JobPage.model_validate(raw)
    dumped = page.model_dump(mode="json", exclude_unset=True)
    assert json.dumps(dumped) == json.dumps(raw)  # same keys in the same order, 0 not 0.0, no nulls added
    assert page.value[0].cost.so_far == 0 and type(page.value[0].cost.so_far) is int


def test_every_schema_model_is_an_envelope():
    for info in iter_modules(schemas.__path__):
        module = import_module(f"{schemas.__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module.__name__:
                assert issubclass(value, Envelope), value
                assert value.model_config.get("extra") == "allow", value


# -- real answers --------------------------------------------------------------------------------

def _same(response, model: type[BaseModel], raw: Any) -> dict[str, Any]:
    """The answer validates against `model`, and is what the service gave, key order included."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert json.dumps(body) == json.dumps(jsonable_encoder(raw))
    dumped = model.model_validate(body).model_dump(mode="json", exclude_unset=True)
    assert json.dumps(dumped) == json.dumps(body)
    return body


def test_job_answers_match_their_models_and_the_service(api: TestClient):
    jobs = api.app.state.jobs
    created = _same(api.put("/api/v1/jobs/j1", json=HELLO), Job, jobs.get("j1"))
    assert created["tags"] == {"team": "a"} and created["command"] == "echo hello"  # the spec passes through
    shown = _same(api.get("/api/v1/jobs/j1"), Job, jobs.get("j1"))
    assert {"status_history", "cost", "creation_context", "queue_reason"} <= set(shown)
    assert not {"nodes", "serverless", "requeues", "mlflow_run_id", "metrics"} & set(shown)  # never null-filled
    listed = _same(api.get("/api/v1/jobs"), JobPage, jobs.list())
    assert set(listed) == {"value", "count", "next_skip"} and listed["next_skip"] is None
    assert not {"status_history", "cost"} & set(listed["value"][0])  # the listing's short view


def test_compute_answers_match_their_models_and_the_service(api: TestClient):
    computes = api.app.state.computes
    created = api.put("/api/v1/computes/cpu", json=CLUSTER)
    assert created.status_code == 200, created.text
    Compute.model_validate(created.json())
    assert {"node_state_counts", "cost", "created_on"} <= set(created.json())
    shown = _same(api.get("/api/v1/computes/cpu"), Compute, computes.get("cpu"))
    assert shown["provider_status"]["name"] == "local" and "state" not in shown  # instances only
    local = _same(api.get("/api/v1/computes/local"), Compute, computes.get("local"))
    assert "cost" not in local and "node_state_counts" not in local
    listed = _same(api.get("/api/v1/computes"), ComputePage, computes.list())
    assert [c["name"] for c in listed["value"]] == ["local", "cpu"]
    providers = _same(api.get("/api/v1/computes:providers"), ProviderList, computes.node_providers.listing())
    assert set(providers) == {"value", "count", "default"}


def test_quota_usage_matches_its_model_and_the_service(api: TestClient):
    usage = _same(api.get("/api/v1/computes:usage"), UsagePage, api.app.state.quotas.list_usage())
    assert {"id", "currentValue", "limit", "name"} <= set(usage["value"][0])


def test_asset_answers_match_their_models_and_the_service(api: TestClient):
    assets = api.app.state.assets
    uri = upload(api, {"MLmodel": b"flavors: {}\n"})
    registered = api.put("/api/v1/models/m/versions/1", json={"path": uri, "type": "mlflow_model"})
    assert registered.status_code == 200, registered.text
    Asset.model_validate(registered.json())
    shown = _same(api.get("/api/v1/models/m/versions/1"), Asset, assets.get("models", "m", "1"))
    assert shown["path"].startswith("azureml://") and shown["is_archived"] is False
    _same(api.put("/api/v1/environments/e/versions/1", json={"image": "python:3.11"}), Asset,
          assets.get("environments", "e", "1"))
    _same(api.get("/api/v1/models"), AssetPage, assets.list("models"))


def test_errors_keep_their_envelope(api: TestClient):
    missing = api.get("/api/v1/jobs/nope")
    assert missing.status_code == 404 and set(missing.json()) == {"error"}


def test_page_is_generic_over_its_items():
    assert Page[Job].model_fields["value"].annotation == list[Job]


def test_python_objects_in_an_answer_are_read_as_json_writes_them():
    """A service that leaves a datetime or a model in its dict answers what FastAPI's encoder wrote."""
    from datetime import datetime, timezone

    class Error(BaseModel):
        code: str
        message: str

    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    raw = {"name": "j", "type": "command", "display_name": "d", "experiment_name": "e", "status": "Failed",
           "error": Error(code="X", message="m"), "start_time": at}
    dumped = Job.model_validate(raw).model_dump(mode="json", exclude_unset=True)
    assert json.dumps(dumped) == json.dumps(jsonable_encoder(raw))
    with pytest.raises(ValueError, match="status"):
        Job.model_validate({**raw, "status": 3})
