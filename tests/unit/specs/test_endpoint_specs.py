"""Online endpoint and online deployment specs: Azure's samples load unchanged, Azure's defaults
are filled in, and what Azure refuses is refused with file:line and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cible.core.errors import InvalidSpecError
from cible.core.models import (
    DefaultScaleSettings,
    DeploymentModel,
    Environment,
    OnlineDeployment,
    OnlineEndpoint,
    TargetUtilizationScaleSettings,
)
from cible.core.specs.azureml.loader import load_spec_dict

EP = "online-endpoint"
DEP = "online-deployment"


@pytest.fixture
def model_1(tmp_path: Path) -> Path:
    """Azure's model-1 sample tree: model/, onlinescoring/score.py, environment/conda.yaml."""
    root = tmp_path / "model-1"
    (root / "model").mkdir(parents=True)
    (root / "model" / "sklearn_regression_model.pkl").write_bytes(b"pkl")
    (root / "onlinescoring").mkdir()
    (root / "onlinescoring" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    (root / "environment").mkdir()
    (root / "environment" / "conda.yaml").write_text("dependencies: [python=3.10, {pip: [azureml-defaults]}]\n")
    return root


BLUE = """
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: blue
endpoint_name: my-endpoint
model:
  path: model-1/model/
code_configuration:
  code: model-1/onlinescoring/
  scoring_script: score.py
environment:
  conda_file: model-1/environment/conda.yaml
  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest
instance_type: Standard_DS3_v2
instance_count: 1
"""

# A deployment with everything it needs, for tests about one key: `{extra}` is added at the root.
MINIMAL = "name: blue\nendpoint_name: my-endpoint\nmodel: azureml:m:1\ninstance_type: Standard_DS3_v2\n" \
          "code_configuration: {{code: model-1/onlinescoring, scoring_script: score.py}}\n" \
          "environment: azureml:env:1\n{extra}"


# ---- endpoints ------------------------------------------------------------------------------------


def test_managed_endpoint_sample(load):
    spec = load("""
        $schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json
        name: my-endpoint
        auth_mode: key
        """, EP)
    endpoint = spec.entity
    assert isinstance(endpoint, OnlineEndpoint)
    assert (endpoint.name, endpoint.auth_mode, endpoint.traffic, endpoint.mirror_traffic) == ("my-endpoint", "key", {},
                                                                                              {})
    assert endpoint.compute is None
    assert spec.warnings == []


def test_kubernetes_endpoint_sample_with_capitalised_auth_mode(load):
    endpoint = load("""
        $schema: https://azuremlschemas.azureedge.net/latest/kubernetesOnlineEndpoint.schema.json
        name: my-endpoint
        compute: azureml:inferencecompute
        auth_mode: Key
        tags:
          tag1: endpoint-tag1-value
        """, EP).entity
    assert endpoint.auth_mode == "key"
    assert endpoint.compute == "azureml:inferencecompute"
    assert endpoint.tags == {"tag1": "endpoint-tag1-value"}


def test_auth_mode_defaults_to_key_and_takes_azures_spellings(load):
    assert load("name: my-endpoint\n", EP).entity.auth_mode == "key"
    assert load("name: my-endpoint\nauth_mode: aml_token\n", EP).entity.auth_mode == "aml_token"
    assert load("name: my-endpoint\nauth_mode: AMLToken\n", EP).entity.auth_mode == "aml_token"


def test_aad_token_says_cible_has_no_entra_id(load_error):
    error = load_error("name: my-endpoint\nauth_mode: aad_token\n", EP)
    assert error.message.startswith("job.yml:2:12: auth_mode: auth_mode 'aad_token' needs Microsoft Entra ID, which "
                                    "cible does not have; use 'key'")
    assert "'aml_token'" in error.message


def test_unknown_auth_mode(load_error):
    error = load_error("name: my-endpoint\nauth_mode: none\n", EP)
    assert error.message == "job.yml:2:12: auth_mode: 'none' is not one of key, aml_token"


@pytest.mark.parametrize("name, why", [
    ("ab", "is 2 characters long"),
    ("a" * 33, "is 33 characters long"),
    ("1-endpoint", "does not follow the rule"),
    ("my-endpoint-", "does not follow the rule"),
    ("my_endpoint", "does not follow the rule"),
])
def test_endpoint_name_rules(load_error, name, why):
    error = load_error(f"name: {name}\n", EP)
    assert error.message.startswith(f"job.yml:1:7: name: {name!r} is not a valid endpoint name ({why}): endpoint "
                                    "names have 3 to 32 characters")
    assert "e.g. 'iris-endpoint'" in error.message


def test_endpoint_name_is_required(load_error):
    assert load_error("auth_mode: key\n", EP).message == ("job.yml:1:1: missing required key 'name' in online "
                                                          "endpoint")


def test_traffic_and_mirror(load):
    endpoint = load("name: my-endpoint\ntraffic:\n  blue: 90\n  green: 10\nmirror_traffic:\n  shadow: 20\n",
                    EP).entity
    assert endpoint.traffic == {"blue": 90, "green": 10}
    assert endpoint.mirror_traffic == {"shadow": 20}
    assert load("name: my-endpoint\ntraffic:\n", EP).entity.traffic == {}
    assert load("name: my-endpoint\ntraffic: {blue: 0, green: 0}\n", EP).entity.traffic == {"blue": 0, "green": 0}


@pytest.mark.parametrize("body, expected", [
    ("traffic: {blue: 90}", "job.yml:2:10: traffic: the shares add up to 90 (blue=90); they must add up to 100"),
    ("traffic: {blue: 101}", "job.yml:2:10: traffic: the share of 'blue' is 101; a share is a whole percent from 0 "
                             "to 100"),
    ("traffic: {blue: true}", "job.yml:2:17: traffic.blue: Input should be a valid integer (got True)"),
    ("traffic: {blue: 50.5, green: 49.5}", "job.yml:2:17: traffic.blue: Input should be a valid integer"),
    ("mirror_traffic: {blue: 10, green: 10}", "job.yml:2:17: mirror_traffic: mirror_traffic names 2 deployments "
                                              "(blue, green); traffic can be mirrored to one deployment only"),
    ("mirror_traffic: {green: 60}", "job.yml:2:17: mirror_traffic: the mirror share of 'green' is 60; a mirror copies "
                                    "a whole percent from 0 to 50"),
    ("traffic: {blue: 100}\nmirror_traffic: {blue: 10}", "job.yml:3:17: mirror_traffic: 'blue' has 100% of the live "
                                                         "traffic, so it cannot also be the mirror"),
    ("traffic: {Blue_1: 100}", "job.yml:2:19: traffic.Blue_1: 'Blue_1' is not a valid deployment name"),
])
def test_bad_traffic(load_error, body, expected):
    assert load_error(f"name: my-endpoint\n{body}\n", EP).message.startswith(expected)


def test_compute_must_name_a_cluster(load_error, load):
    assert load("name: my-endpoint\ncompute: cpu-cluster\n", EP).entity.compute == "cpu-cluster"
    error = load_error("name: my-endpoint\ncompute: azureml:my cluster\n", EP)
    assert error.message.startswith("job.yml:2:10: compute: 'my cluster' is not a valid compute name")
    assert error.message.endswith("(write the cluster as 'azureml:<cluster-name>')")


def test_unknown_endpoint_key_lists_the_allowed_ones(load_error):
    error = load_error("name: my-endpoint\ntrafic: {blue: 100}\n", EP)
    assert error.message.startswith("job.yml:2:1: unknown key 'trafic' in online endpoint; allowed keys: auth_mode, "
                                    "compute, description")
    assert error.message.endswith("did you mean 'traffic'?")


def test_endpoint_keys_cible_does_not_act_on_warn(load):
    spec = load("name: my-endpoint\nidentity: {type: system_assigned}\npublic_network_access: disabled\n", EP)
    assert spec.warnings == ["'identity' is accepted but not acted on by cible yet",
                             "'public_network_access: disabled' is accepted but not acted on by cible yet"]
    assert spec.located(spec.warnings[0]) == "job.yml:2:1: 'identity' is accepted but not acted on by cible yet"
    # Public access is what cible does anyway.
    assert load("name: my-endpoint\npublic_network_access: Enabled\n", EP).warnings == []


def test_shown_endpoint_reloads(load):
    """`az ml online-endpoint show -o yaml` output is accepted back (its read-only keys are ignored)."""
    endpoint = load("""
        auth_mode: key
        kind: Managed
        location: westus2
        mirror_traffic: {}
        name: my-endpoint
        openapi_uri: https://my-endpoint.westus2.inference.ml.azure.com/swagger.json
        provisioning_state: Succeeded
        scoring_uri: https://my-endpoint.westus2.inference.ml.azure.com/score
        traffic: {blue: 100}
        """, EP).entity
    assert endpoint.provisioning_state == "Succeeded"


# ---- deployments ---------------------------------------------------------------------------------


def test_managed_deployment_sample_resolves_paths_and_fills_azures_defaults(load, model_1):
    spec = load(BLUE, DEP)
    deployment = spec.entity
    assert isinstance(deployment, OnlineDeployment)
    assert (deployment.name, deployment.endpoint_name, deployment.type) == ("blue", "my-endpoint", "managed")
    assert isinstance(deployment.model, DeploymentModel)
    assert deployment.model.path == str((model_1 / "model").resolve())
    assert deployment.model.type == "custom_model"
    assert deployment.code_configuration.code == str((model_1 / "onlinescoring").resolve())
    assert deployment.code_configuration.scoring_script == "score.py"
    assert isinstance(deployment.environment, Environment)
    assert deployment.environment.conda_file == str((model_1 / "environment" / "conda.yaml").resolve())
    assert (deployment.instance_type, deployment.instance_count) == ("Standard_DS3_v2", 1)
    assert deployment.scale_settings == DefaultScaleSettings()
    request = deployment.request_settings
    assert (request.request_timeout_ms, request.max_concurrent_requests_per_instance, request.max_queue_wait_ms) == (
        5000, 1, 500)
    for probe in (deployment.liveness_probe, deployment.readiness_probe):
        assert (probe.initial_delay, probe.period, probe.timeout, probe.success_threshold,
                probe.failure_threshold) == (10, 10, 2, 1, 30)
    assert deployment.app_insights_enabled is False
    assert deployment.target_concurrency == 1.0
    assert not deployment.is_no_code
    assert spec.warnings == []


def test_kubernetes_deployment_sample(load, model_1):
    spec = load("""
        $schema: https://azuremlschemas.azureedge.net/latest/kubernetesOnlineDeployment.schema.json
        name: blue
        type: Kubernetes
        endpoint_name: my-endpoint
        model:
          path: model-1/model/
        code_configuration:
          code: model-1/onlinescoring/
          scoring_script: score.py
        environment:
          conda_file: model-1/environment/conda.yaml
          image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest
        request_settings:
          request_timeout_ms: 3000
          max_queue_wait_ms: 3000
        resources:
          requests:
            cpu: "0.1"
            memory: "0.1Gi"
          limits:
            cpu: 0.2
            memory: "200Mi"
            nvidia.com/gpu: 1
        tags:
          tag1: deployment-tag1-value
        instance_count: 1
        scale_settings:
          type: default
        """, DEP)
    deployment = spec.entity
    assert deployment.type == "kubernetes"
    assert deployment.instance_type is None  # Azure's cluster default instance type
    assert deployment.resources.limits.cpu == "0.2" and deployment.resources.limits.gpu == "1"
    assert deployment.request_settings.max_queue_wait_ms == 3000
    assert spec.warnings == ["'resources' is accepted but not acted on by cible yet"]


@pytest.mark.parametrize("ref", [
    "azureml:my-model:1", "azureml:my-model@latest", "azureml:my-model",
    "azureml://registries/azureml/models/distilbert-base-uncased/versions/3",
    "azureml:/subscriptions/0000/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/models/"
    "my-model/versions/2",
])
def test_registered_model_references(load, model_1, ref):
    deployment = load(MINIMAL.format(extra="").replace("azureml:m:1", ref), DEP).entity
    assert deployment.model == ref


@pytest.mark.parametrize("ref, expected", [
    ("./model-1/model", "'./model-1/model' is not a model reference: a registered model is 'azureml:<name>:<version>' "
                        "(or 'azureml:<name>@latest'); a local model is written inline, e.g. 'model: {path: ./model}'"),
    ("'azureml:m:'", "'azureml:m:' is not a model reference like 'azureml:<name>:<version>'"),
])
def test_bad_model_reference(load_error, model_1, ref, expected):
    error = load_error(MINIMAL.format(extra="").replace("azureml:m:1", ref), DEP)
    assert error.message.startswith(f"job.yml:3:8: model: {expected}")


def test_inline_model_path_must_exist(load_error, model_1):
    error = load_error(BLUE.replace("model-1/model/", "model-1/no-such-model"), DEP)
    assert error.message.startswith("job.yml:5:9: model.path: model path 'model-1/no-such-model' does not exist")


def test_managed_deployment_needs_instance_type(load_error, model_1):
    error = load_error(BLUE.replace("instance_type: Standard_DS3_v2\n", ""), DEP)
    assert error.message == ("job.yml:1:1: missing required key 'instance_type' in managed online deployment: the VM "
                             "size of each replica, e.g. 'instance_type: Standard_DS3_v2'")


def test_scoring_script_must_be_in_the_code_folder(load_error, model_1):
    error = load_error(BLUE.replace("scoring_script: score.py", "scoring_script: scoring.py"), DEP)
    assert error.message == (f"job.yml:8:19: code_configuration.scoring_script: scoring script 'scoring.py' not found "
                             f"in the code folder {(model_1 / 'onlinescoring').resolve()}")
    error = load_error(BLUE.replace("scoring_script: score.py", "scoring_script: ../score.py"), DEP)
    assert error.message.startswith("job.yml:8:19: code_configuration.scoring_script: '../score.py' is not a path "
                                    "inside the code folder; write it relative to code_configuration.code")
    error = load_error(BLUE.replace("code: model-1/onlinescoring/", "code: model-1/onlinescoring/score.py"), DEP)
    assert error.message.endswith("is a file; code is the folder that holds the scoring script")


def test_a_scoring_script_in_a_subfolder_of_code(load, model_1):
    (model_1 / "onlinescoring" / "sub").mkdir()
    (model_1 / "onlinescoring" / "sub" / "score.py").write_text("")
    text = BLUE.replace("code: model-1/onlinescoring/", "code: model-1").replace(
        "scoring_script: score.py", "scoring_script: onlinescoring/sub/score.py")
    assert load(text, DEP).entity.code_configuration.scoring_script == "onlinescoring/sub/score.py"


def test_no_code_deployment_of_an_mlflow_model_needs_neither_code_nor_environment(load, tmp_path):
    (tmp_path / "sklearn-diabetes" / "model").mkdir(parents=True)
    deployment = load("""
        $schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
        name: sklearn-deployment
        endpoint_name: my-endpoint
        model:
          name: mir-sample-sklearn-ncd-model
          version: 2
          path: sklearn-diabetes/model
          type: mlflow_model
        instance_type: Standard_DS3_v2
        instance_count: 1
        """, DEP).entity
    assert deployment.is_no_code
    assert deployment.environment is None and deployment.code_configuration is None
    assert (deployment.model.name, deployment.model.version, deployment.model.type) == (
        "mir-sample-sklearn-ncd-model", "2", "mlflow_model")


def test_no_scoring_script_is_an_error_unless_the_model_is_mlflow(load_error, model_1):
    text = BLUE.replace("code_configuration:\n  code: model-1/onlinescoring/\n  scoring_script: score.py\n", "")
    error = load_error(text, DEP)
    assert error.message == ("job.yml:1:1: missing required key 'code_configuration' in online deployment (code and "
                             "scoring_script): the model is a custom_model, and only an MLflow model (type: "
                             "mlflow_model) is served without a scoring script")
    error = load_error("name: blue\nendpoint_name: my-endpoint\ninstance_type: Standard_DS3_v2\n", DEP)
    assert "missing required key 'code_configuration'" in error.message and "this deployment has no model" in \
        error.message


def test_registered_model_without_code_is_checked_once_its_type_is_known(load):
    """The loader cannot tell a registered model's type: the server checks it when it resolves the model."""
    deployment = load("name: blue\nendpoint_name: my-endpoint\nmodel: azureml:m:1\ninstance_type: x\n", DEP).entity
    deployment.check_model_type("mlflow_model")
    with pytest.raises(InvalidSpecError) as info:
        deployment.check_model_type("custom_model")
    assert info.value.message.startswith("online deployment 'blue': missing required key 'code_configuration'")


def test_a_scoring_script_needs_an_environment(load_error, model_1):
    text = MINIMAL.format(extra="").replace("environment: azureml:env:1\n", "")
    error = load_error(text, DEP)
    assert error.message.startswith("job.yml:1:1: missing required key 'environment' in online deployment: a scoring "
                                    "script runs in an environment")


def test_environment_file_is_inlined_like_a_jobs(load, write, model_1):
    write("env.yml", "name: my-env\nimage: python:3.11-slim\nconda_file: model-1/environment/conda.yaml\n"
                     "inference_config:\n  scoring_route: {port: 5001, path: /score}\n")
    spec = load(MINIMAL.format(extra="").replace("environment: azureml:env:1", "environment: file:env.yml"), DEP)
    assert isinstance(spec.entity.environment, Environment)
    assert spec.entity.environment.conda_file == str((model_1 / "environment" / "conda.yaml").resolve())
    assert spec.warnings == ["'environment.inference_config' is accepted but not acted on by cible yet"]


def test_environment_reference_stays_a_string(load, model_1):
    assert load(MINIMAL.format(extra=""), DEP).entity.environment == "azureml:env:1"


def test_target_utilization_scale_settings(load, model_1):
    deployment = load(MINIMAL.format(extra="""scale_settings:
  type: target_utilization
  min_instances: 0
  max_instances: 5
  polling_interval: 10
request_settings:
  max_concurrent_requests_per_instance: 4
"""), DEP).entity
    settings = deployment.scale_settings
    assert isinstance(settings, TargetUtilizationScaleSettings)
    assert (settings.min_instances, settings.max_instances, settings.polling_interval,
            settings.target_utilization_percentage, settings.target_concurrency) == (0, 5, 10, 70, None)
    assert settings.idle_time_before_scale_to_zero is None  # cible's: 120 s when not set
    assert deployment.target_concurrency == 4.0  # max_concurrent_requests_per_instance, when not set


def test_scale_settings_type_spellings_and_inference(load, model_1):
    kinds = {
        "{type: Default}": DefaultScaleSettings,
        "{type: TargetUtilization}": TargetUtilizationScaleSettings,
        "{min_instances: 1, max_instances: 3, target_concurrency: 2.5}": TargetUtilizationScaleSettings,
        "{}": DefaultScaleSettings,
    }
    for text, kind in kinds.items():
        deployment = load(MINIMAL.format(extra=f"scale_settings: {text}\n"), DEP).entity
        assert isinstance(deployment.scale_settings, kind), text
    assert deployment_target(load, "{type: target_utilization, target_concurrency: 2.5}") == 2.5


def deployment_target(load, settings: str) -> float:
    return load(MINIMAL.format(extra=f"scale_settings: {settings}\n"), DEP).entity.target_concurrency


@pytest.mark.parametrize("extra, expected", [
    ("scale_settings: {type: target_utilization, min_instances: 3, max_instances: 2}",
     "job.yml:7:59: scale_settings.min_instances: min_instances (3) must not exceed max_instances (2); raise "
     "max_instances or lower min_instances"),
    ("scale_settings: {type: target_utilization, polling_interval: 0}",
     "job.yml:7:62: scale_settings.polling_interval: Input should be greater than or equal to 1"),
    ("scale_settings: {type: target_utilization, idle_time_before_scale_to_zero: 0}",
     "job.yml:7:76: scale_settings.idle_time_before_scale_to_zero: Input should be greater than or equal to 1"),
    ("scale_settings: {type: manual}", "job.yml:7:24: scale_settings.type: 'manual' is not one of default, "
                                       "target_utilization"),
    ("scale_settings: {type: default, max_instances: 2}", "job.yml:7:33: unknown key 'max_instances' in "
                                                          "scale_settings; allowed keys: type"),
    ("request_settings: {request_timeout_ms: 200000}", "job.yml:7:40: request_settings.request_timeout_ms: 200000 ms "
                                                       "is above the 180000 ms a managed deployment allows"),
    ("request_settings: {request_timeout_ms: 400000}", "job.yml:7:40: request_settings.request_timeout_ms: Input "
                                                       "should be less than or equal to 300000"),
    ("request_settings: {max_concurrent_requests_per_instance: 0}", "job.yml:7:58: request_settings."
                                                                    "max_concurrent_requests_per_instance: Input "
                                                                    "should be greater than or equal to 1"),
    ("liveness_probe: {success_threshold: 2}", "job.yml:7:37: liveness_probe.success_threshold: a liveness probe "
                                               "passes on one success: success_threshold must be 1 (got 2)"),
    ("readiness_probe: {initial_delay: 0}", "job.yml:7:34: readiness_probe.initial_delay: Input should be greater "
                                            "than or equal to 1"),
    ("instance_count: 0", "job.yml:7:17: instance_count: Input should be greater than or equal to 1"),
    ("resources: {requests: {cpu: '1'}}", "job.yml:7:12: resources: 'resources' (requests and limits) is for type: "
                                          "kubernetes deployments"),
    ("type: serverless", "job.yml:7:7: type: 'serverless' is not one of managed, kubernetes"),
])
def test_bad_deployment_settings(load_error, model_1, extra, expected):
    assert load_error(MINIMAL.format(extra=extra + "\n"), DEP).message.startswith(expected)


def test_kubernetes_allows_longer_timeouts_and_no_egress_setting(load, load_error, model_1):
    deployment = load(MINIMAL.format(extra="type: kubernetes\nrequest_settings: {request_timeout_ms: 300000}\n"),
                      DEP).entity
    assert deployment.request_settings.request_timeout_ms == 300000
    error = load_error(MINIMAL.format(extra="type: kubernetes\negress_public_network_access: disabled\n"), DEP)
    assert "job.yml:8:31: egress_public_network_access: 'egress_public_network_access' is for managed" in error.message


def test_readiness_may_need_several_successes(load, model_1):
    deployment = load(MINIMAL.format(extra="readiness_probe: {success_threshold: 2, period: 1, initial_delay: 1}\n"),
                      DEP).entity
    assert (deployment.readiness_probe.success_threshold, deployment.readiness_probe.period) == (2, 1)


def test_deployment_name_rules(load_error, model_1):
    error = load_error(MINIMAL.format(extra="").replace("name: blue", "name: b"), DEP)
    assert error.message.startswith("job.yml:1:7: name: 'b' is not a valid deployment name (is 1 characters long)")


def test_deployment_keys_cible_does_not_act_on_warn(load, model_1):
    spec = load(MINIMAL.format(extra="""app_insights_enabled: true
egress_public_network_access: disabled
data_collector:
  collections:
    model_inputs: {enabled: 'True'}
scale_settings: {type: target_utilization, target_utilization_percentage: 50}
"""), DEP)
    assert [w.split("'")[1] for w in spec.warnings] == [
        "app_insights_enabled: true", "egress_public_network_access: disabled", "data_collector",
        "scale_settings.target_utilization_percentage",
    ]
    quiet = load(MINIMAL.format(extra="app_insights_enabled: false\negress_public_network_access: enabled\n"), DEP)
    assert quiet.warnings == []


def test_set_overrides_and_name_apply_to_deployments(load, model_1):
    spec = load(BLUE, DEP, set_overrides=["instance_count=3"], name="green")
    assert (spec.entity.name, spec.entity.instance_count) == ("green", 3)


def test_a_request_body_loads_without_line_numbers(tmp_path, model_1):
    body = {"name": "blue", "endpoint_name": "my-endpoint", "model": {"path": str(model_1 / "model")},
            "code_configuration": {"code": str(model_1 / "onlinescoring"), "scoring_script": "score.py"},
            "environment": "azureml:env:1", "instance_type": "Standard_DS3_v2"}
    assert load_spec_dict(body, DEP).entity.instance_count == 1
    with pytest.raises(InvalidSpecError) as info:
        load_spec_dict({**body, "instance_count": -1}, DEP)
    assert info.value.message == "<dict>: instance_count: Input should be greater than or equal to 1 (got -1)"


def test_unknown_kind_names_the_endpoint_kinds(load_error):
    assert "online-endpoint or online-deployment" in load_error("name: x\n", "online_endpoint").message
