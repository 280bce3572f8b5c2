"""Asset references, compute references and data URIs."""

from __future__ import annotations

import pytest

from cible.core.errors import InvalidSpecError
from cible.core.specs.azureml.refs import (
    AssetRef,
    classify_path,
    parse_asset_ref,
    parse_compute_ref,
    parse_datastore_uri,
    parse_job_output_uri,
    wasbs_to_https,
)

ARM = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"


@pytest.mark.parametrize("value, expected", [
    ("azureml:my-env:3", AssetRef("my-env", version="3")),
    ("azureml:AzureML-sklearn-1.5@latest", AssetRef("AzureML-sklearn-1.5", label="latest")),
    ("azureml:cpu-cluster", AssetRef("cpu-cluster")),
    ("azureml://registries/azureml/environments/sklearn-1.5/labels/latest",
     AssetRef("sklearn-1.5", label="latest", registry="azureml", asset_type="environments")),
    ("azureml://registries/azureml/environments/sklearn-1.5/versions/12",
     AssetRef("sklearn-1.5", version="12", registry="azureml", asset_type="environments")),
    ("azureml://registries/reg/models/iris/versions/1",
     AssetRef("iris", version="1", registry="reg", asset_type="models")),
    (f"azureml:{ARM}/environments/env/versions/2", AssetRef("env", version="2", asset_type="environments")),
    (f"azureml:{ARM}/data/iris/versions/1", AssetRef("iris", version="1", asset_type="data")),
])
def test_parse_asset_ref_forms(value, expected):
    assert parse_asset_ref(value) == expected


@pytest.mark.parametrize("value", [
    "./data", "https://x/y.csv", "azureml://datastores/workspaceblobstore/paths/x",
    "azureml://jobs/j/outputs/o", f"azureml:{ARM}/computes/cpu", "python:3.11",
])
def test_parse_asset_ref_returns_none_for_non_refs(value):
    assert parse_asset_ref(value) is None


@pytest.mark.parametrize("value", ["azureml:", "azureml:x:", "azureml:x@", "azureml:a:1:2",
                                   "azureml://registries/only", "azureml:/subscriptions/broken"])
def test_parse_asset_ref_rejects_malformed(value):
    with pytest.raises(InvalidSpecError):
        parse_asset_ref(value)


@pytest.mark.parametrize("value, name", [
    ("azureml:cpu-cluster", "cpu-cluster"),
    ("cpu-cluster", "cpu-cluster"),
    ("local", "local"),
    ("azureml:serverless", "serverless"),
    (f"azureml:{ARM}/computes/gpu-cluster", "gpu-cluster"),
    (f"{ARM}/computes/gpu-cluster", "gpu-cluster"),
])
def test_parse_compute_ref(value, name):
    assert parse_compute_ref(value) == name


@pytest.mark.parametrize("value", ["", "azureml:", "a b", "azureml:c:1", "x/y"])
def test_parse_compute_ref_invalid(value):
    with pytest.raises(InvalidSpecError, match="not a compute reference"):
        parse_compute_ref(value)


@pytest.mark.parametrize("value, kind", [
    ("./data", "local"), ("/abs/file.csv", "local"), ("file:./x", "local"), ("data", "local"),
    ("http://x/y", "http"), ("https://x/y", "http"),
    ("wasbs://c@a.blob.core.windows.net/p", "wasbs"),
    ("abfss://fs@a.dfs.core.windows.net/p", "abfss"), ("adl://a.azuredatalakestore.net/p", "adl"),
    ("azureml://datastores/workspaceblobstore/paths/p", "datastore"),
    ("azureml://subscriptions/s/resourcegroups/rg/workspaces/ws/datastores/ds/paths/p", "datastore"),
    ("azureml://jobs/j/outputs/o/paths/p", "job_output"),
    ("azureml:iris@latest", "asset"), ("azureml://registries/r/models/m/versions/1", "asset"),
    ("runs:/run1/model", "runs"),
])
def test_classify_path(value, kind):
    assert classify_path(value) == kind


def test_classify_path_rejects_unknown_scheme():
    with pytest.raises(InvalidSpecError, match="unsupported URI scheme 's3'"):
        classify_path("s3://bucket/key")


def test_wasbs_to_https():
    assert (wasbs_to_https("wasbs://datasets@azuremlexamples.blob.core.windows.net/iris.csv")
            == "https://azuremlexamples.blob.core.windows.net/datasets/iris.csv")
    assert wasbs_to_https("wasbs://c@a.blob.core.windows.net") == "https://a.blob.core.windows.net/c"
    with pytest.raises(InvalidSpecError):
        wasbs_to_https("https://a/b")


def test_parse_datastore_uri_short_and_long():
    assert parse_datastore_uri("azureml://datastores/workspaceblobstore/paths/a/b.csv") == (
        "workspaceblobstore", "a/b.csv")
    long = "azureml://subscriptions/s/resourcegroups/rg/workspaces/ws/datastores/ds/paths/x/"
    assert parse_datastore_uri(long) == ("ds", "x/")
    with pytest.raises(InvalidSpecError):
        parse_datastore_uri("azureml://jobs/j/outputs/o")


def test_parse_job_output_uri():
    assert parse_job_output_uri("azureml://jobs/j1/outputs/model/paths/a/b") == ("j1", "model", "a/b")
    assert parse_job_output_uri("azureml://jobs/j1/outputs/artifacts") == ("j1", "artifacts", "")
    with pytest.raises(InvalidSpecError):
        parse_job_output_uri("azureml://jobs/j1")
