"""A validation pattern anchored with `^...$` and used with `re.match` lets a trailing newline
through (`$` also matches before a final "\n"): cible's validations use `fullmatch`, so a value
with a trailing newline is refused like any other character the rule does not allow."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from pydantic import ValidationError

from cible.core.errors import InvalidRequestError, InvalidSpecError
from cible.core.models.computes import idle_time_seconds
from cible.core.models.jobs import JobResources
from cible.core.specs.azureml.refs import parse_asset_ref, parse_datastore_uri
from cible.server import tracking_policy
from cible.server.services.blobs import check_digest

DIGEST = hashlib.sha256(b"data").hexdigest()


def test_a_sha256_with_a_trailing_newline_is_refused():
    assert check_digest(DIGEST) == DIGEST
    with pytest.raises(InvalidRequestError) as refused:
        check_digest(DIGEST + "\n")
    assert refused.value.details == {"field": "sha256"}


def test_names_sizes_durations_and_uris_with_a_trailing_newline_are_refused():
    assert parse_asset_ref("azureml:my-data:1").name == "my-data"
    with pytest.raises(InvalidSpecError):
        parse_asset_ref("azureml:my-data\n")
    assert JobResources(shm_size="2g").shm_size == "2g"
    with pytest.raises(ValidationError):
        JobResources(shm_size="2g\n")
    assert idle_time_seconds(None, "PT30M") == 1800
    with pytest.raises(ValueError):
        idle_time_seconds(None, "PT30M\n")
    assert parse_datastore_uri("azureml://datastores/ds/paths/a") == ("ds", "a")
    with pytest.raises(InvalidSpecError):
        parse_datastore_uri("azureml://datastores/ds/paths\n")


def test_a_job_token_write_to_an_mlflow_path_with_a_trailing_newline_is_refused():
    async def owner(_: str) -> str | None:
        return "job-1"

    def decide(path: str) -> tracking_policy.Decision:
        return asyncio.run(tracking_policy.decide("job-1", "POST", path, b"{}", owner, owner))

    assert tracking_policy.needs_body("POST", "/api/2.0/mlflow/runs/create")
    assert not tracking_policy.needs_body("POST", "/api/2.0/mlflow/runs/create\n")
    assert decide("/api/2.0/mlflow/runs/create").refusal is None
    assert decide("/api/2.0/mlflow/runs/create\n").refusal is not None
