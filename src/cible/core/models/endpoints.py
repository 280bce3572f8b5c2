"""Online endpoint and online deployment specs (Azure reference §5.1-5.3).

Field names, defaults and bounds are Azure's (the CLI v2 YAML schemas and the azure-ai-ml SDK's
marshmallow schemas), with three additions of cible's, each beyond what Azure does rather than
different from it:

- ``scale_settings: {type: target_utilization}`` is honoured for managed deployments too (Azure
  takes it for Kubernetes only), scaled on in-flight requests per replica: ``target_concurrency``
  (cible's key; default ``request_settings.max_concurrent_requests_per_instance``), not CPU;
- ``min_instances: 0`` scales a deployment to zero after ``idle_time_before_scale_to_zero`` seconds
  without a request (cible's key; 120 by default), and the first request brings a replica back;
- an endpoint's ``compute: azureml:<cluster>`` (Kubernetes endpoints on Azure) places its
  replicas on that cluster's nodes.

The rules that need no other entity (traffic shares, mirror share) are here; those that need the
endpoint's deployments are in ``cible.core.planning.traffic``, which uses the same messages.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Discriminator, Field, StrictInt, StrictStr, Tag, field_validator, model_validator

from cible.core.errors import InvalidSpecError
from cible.core.naming import COMPUTE, AssetName, DeploymentName, EndpointName

from .assets import Version
from .common import LowerStr, OptStr, SpecModel, StrMap
from .components import Problem, raise_at
from .computes import IdentityConfiguration
from .jobs import MAX_NODES, EnvironmentValue, EnvironmentVariables, Tags

# Azure's request timeout caps (ms): managed endpoints 180 s, Kubernetes 300 s.
MAX_REQUEST_TIMEOUT_MS = {"managed": 180_000, "kubernetes": 300_000}
MAX_MIRROR_PERCENT = 50
# Sane bounds that keep the planners' arithmetic finite (far above any real setting).
MAX_PROBE_SECONDS = 86_400
MAX_PROBE_THRESHOLD = 10_000
MAX_CONCURRENT_REQUESTS = 10_000

AuthMode = Literal["key", "aml_token"]
# Azure's REST and SDK spellings of the same modes (`Key`, `AMLToken`, `AADToken`).
_AUTH_MODES = {"key": "key", "aml_token": "aml_token", "amltoken": "aml_token",
               "aad_token": "aad_token", "aadtoken": "aad_token"}


def _auth_mode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    mode = _AUTH_MODES.get(value.strip().lower(), value)
    if mode == "aad_token":
        raise ValueError("auth_mode 'aad_token' needs Microsoft Entra ID, which cible does not have; "
                         "use 'key' (two keys from `get-credentials`) or 'aml_token' (expiring tokens)")
    return mode


# ---- traffic shares (the checks that need no deployment list) ----------------------------------


def traffic_problems(traffic: dict[str, Any]) -> list[str]:
    """Why `traffic` is not a valid split (each 0-100, a whole number, summing to 0 or 100)."""
    problems = []
    for name, share in traffic.items():
        if isinstance(share, bool) or not isinstance(share, int) or not 0 <= share <= 100:
            problems.append(f"the share of '{name}' is {share!r}; a share is a whole percent from 0 to 100")
    if problems:
        return problems
    total = sum(traffic.values())
    if total not in (0, 100):
        shares = " ".join(f"{name}={share}" for name, share in traffic.items())
        problems.append(f"the shares add up to {total} ({shares}); they must add up to 100 (or all be 0, "
                        "which sends no traffic); set every deployment's share, e.g. 'blue=90 green=10'")
    return problems


def mirror_problems(mirror: dict[str, Any], traffic: dict[str, Any]) -> list[str]:
    """Why `mirror` is not a valid mirror: one deployment, 0-50 %, not one that has live traffic."""
    if len(mirror) > 1:
        return [f"mirror_traffic names {len(mirror)} deployments ({', '.join(mirror)}); traffic can be mirrored "
                "to one deployment only"]
    problems = []
    for name, share in mirror.items():
        if isinstance(share, bool) or not isinstance(share, int) or not 0 <= share <= MAX_MIRROR_PERCENT:
            problems.append(f"the mirror share of '{name}' is {share!r}; a mirror copies a whole percent from "
                            f"0 to {MAX_MIRROR_PERCENT} of the live requests")
        elif share and traffic.get(name, 0):
            problems.append(f"'{name}' has {traffic[name]}% of the live traffic, so it cannot also be the mirror; "
                            f"set its traffic to 0 first (e.g. 'blue=100 {name}=0'), or mirror another deployment")
    return problems


# ---- the endpoint ---------------------------------------------------------------------------


def _compute_ref(value: str | None) -> str | None:
    if value is None:
        return None
    name = value[len("azureml:"):] if value.lower().startswith("azureml:") else value
    if name.startswith("/subscriptions/") and "/computes/" in name:
        return value  # an ARM id: its last part is the name
    problem = COMPUTE.problem(name)
    if problem:
        raise ValueError(f"{problem} (write the cluster as 'azureml:<cluster-name>')")
    return value


class OnlineEndpoint(SpecModel):
    """An online endpoint (``az ml online-endpoint create -f``): a name, auth and a traffic split."""

    name: EndpointName
    description: str | None = None
    tags: Tags = Field(default_factory=dict)
    auth_mode: Annotated[AuthMode, BeforeValidator(_auth_mode)] = "key"
    # Azure: a Kubernetes endpoint's cluster. cible: the cluster whose nodes run the replicas
    # (none: each deployment gets a hidden cluster of its instance_type).
    compute: str | None = None
    identity: IdentityConfiguration | None = None
    traffic: dict[DeploymentName, StrictInt] = Field(default_factory=dict)
    mirror_traffic: dict[DeploymentName, StrictInt] = Field(default_factory=dict)
    public_network_access: Annotated[Literal["enabled", "disabled"] | None, LowerStr] = None
    # Read-only, server-populated: present in `az ml online-endpoint show` output, ignored on create.
    id: str | None = None
    provisioning_state: str | None = None
    scoring_uri: str | None = None
    openapi_uri: str | None = None
    location: str | None = None
    kind: str | None = None
    properties: dict[str, Any] | None = None

    @field_validator("traffic", "mirror_traffic", mode="before")
    @classmethod
    def _empty_map(cls, value: Any) -> Any:
        return {} if value is None else value  # `traffic:` with nothing under it

    @field_validator("compute")
    @classmethod
    def _compute(cls, value: str | None) -> str | None:
        return _compute_ref(value)

    @model_validator(mode="after")
    def _shares(self) -> OnlineEndpoint:
        problems: list[Problem] = [(("traffic",), text, self.traffic) for text in traffic_problems(self.traffic)]
        problems += [(("mirror_traffic",), text, self.mirror_traffic)
                     for text in mirror_problems(self.mirror_traffic, self.traffic)]
        raise_at("OnlineEndpoint", problems)
        return self


# ---- a deployment's parts ---------------------------------------------------------------------


class CodeConfiguration(SpecModel):
    """The scoring code: a folder and the script in it that has ``init()`` and ``run()``."""

    code: str
    scoring_script: str

    @field_validator("scoring_script")
    @classmethod
    def _relative(cls, value: str) -> str:
        posix, windows = PurePosixPath(value), PureWindowsPath(value)
        if not value.strip():
            raise ValueError("the scoring script is a file name such as 'score.py'")
        if posix.is_absolute() or windows.is_absolute() or ".." in posix.parts or ".." in windows.parts:
            raise ValueError(f"{value!r} is not a path inside the code folder; write it relative to "
                             "code_configuration.code, e.g. 'score.py' or 'onlinescoring/score.py'")
        return value


class DeploymentModel(SpecModel):
    """A model written inline in a deployment (Azure's anonymous model): registered on deploy."""

    name: AssetName | None = None
    version: Version = None
    description: str | None = None
    tags: StrMap = Field(default_factory=dict)
    path: str
    type: Literal["custom_model", "mlflow_model", "triton_model"] = "custom_model"
    flavors: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    stage: str | None = None


# azureml:<name>:<version>, azureml:<name>@<label>, azureml:<name> (Azure's default version), a
# registry's azureml://registries/<r>/models/<name>/versions/<v>, or an ARM id (`az ml model show`'s).
_MODEL_REF = re.compile(r"azureml:(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*)(?::(?P<version>[^:@/]+)|@(?P<label>[^:@/]+))?")
_REGISTRY_MODEL = re.compile(r"azureml://registries/[^/]+/models/[^/]+(?:/(?:versions|labels)/[^/]+)?/?",
                             re.IGNORECASE)
_ARM_MODEL = re.compile(r"(?:azureml:)?/subscriptions/[^/]+/resourcegroups/[^/]+/providers/[^/]+/workspaces/[^/]+"
                        r"/models/[^/]+(?:/(?:versions|labels)/[^/]+)?/?", re.IGNORECASE)


def _model_ref(value: str) -> str:
    if _REGISTRY_MODEL.fullmatch(value) or _ARM_MODEL.fullmatch(value) or _MODEL_REF.fullmatch(value):
        return value
    if value.lower().startswith("azureml:"):
        raise ValueError(f"{value!r} is not a model reference like 'azureml:<name>:<version>' or "
                         "'azureml:<name>@latest'")
    raise ValueError(f"{value!r} is not a model reference: a registered model is 'azureml:<name>:<version>' "
                     "(or 'azureml:<name>@latest'); a local model is written inline, e.g. "
                     "'model: {path: ./model}'")


def _model_tag(value: Any) -> str:
    return "inline" if isinstance(value, (dict, DeploymentModel)) else "reference"


ModelValue = Annotated[
    Union[Annotated[StrictStr, Tag("reference")], Annotated[DeploymentModel, Tag("inline")]],
    Discriminator(_model_tag),
]


class RequestSettings(SpecModel):
    request_timeout_ms: int = Field(5000, ge=1, le=max(MAX_REQUEST_TIMEOUT_MS.values()))
    max_concurrent_requests_per_instance: int = Field(1, ge=1, le=MAX_CONCURRENT_REQUESTS)
    max_queue_wait_ms: int = Field(500, ge=0, le=max(MAX_REQUEST_TIMEOUT_MS.values()))  # deprecated by Azure


class ProbeSettings(SpecModel):
    """A readiness or liveness probe (``GET /`` of the scoring server). Seconds, as Azure writes them."""

    initial_delay: int = Field(10, ge=1, le=MAX_PROBE_SECONDS)
    period: int = Field(10, ge=1, le=MAX_PROBE_SECONDS)
    timeout: int = Field(2, ge=1, le=MAX_PROBE_SECONDS)
    success_threshold: int = Field(1, ge=1, le=MAX_PROBE_THRESHOLD)
    failure_threshold: int = Field(30, ge=1, le=MAX_PROBE_THRESHOLD)


class LivenessProbeSettings(ProbeSettings):
    @field_validator("success_threshold")
    @classmethod
    def _one_success(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"a liveness probe passes on one success: success_threshold must be 1 (got {value}); "
                             "Azure fixes it, only a readiness probe's can be higher")
        return value


class DefaultScaleSettings(SpecModel):
    """``instance_count`` replicas, changed by hand (``--set instance_count=N``)."""

    type: Literal["default"] = "default"


class TargetUtilizationScaleSettings(SpecModel):
    """Autoscaling between min and max replicas on the in-flight requests per replica."""

    type: Literal["target_utilization"] = "target_utilization"
    min_instances: int = Field(1, ge=0, le=MAX_NODES)  # 0: scale to zero (cible)
    max_instances: int = Field(1, ge=1, le=MAX_NODES)
    polling_interval: int = Field(1, ge=1, le=MAX_PROBE_SECONDS)  # seconds between two scale decisions
    target_utilization_percentage: int = Field(70, ge=1, le=100)  # Azure's CPU target: not acted on
    # cible: in-flight requests per replica to aim for (None: max_concurrent_requests_per_instance).
    target_concurrency: float | None = Field(None, gt=0, le=MAX_CONCURRENT_REQUESTS)
    # cible, with min_instances 0: seconds without a request before the last replica stops (None: 120 s,
    # AmlCompute's idle_time_before_scale_down default, whose name and unit this follows).
    idle_time_before_scale_to_zero: int | None = Field(None, ge=1, le=MAX_PROBE_SECONDS)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> TargetUtilizationScaleSettings:
        if self.min_instances > self.max_instances:
            raise_at("TargetUtilizationScaleSettings", [(
                ("min_instances",), f"min_instances ({self.min_instances}) must not exceed max_instances "
                f"({self.max_instances}); raise max_instances or lower min_instances", self.min_instances)])
        return self


_TARGET_UTILIZATION_KEYS = {name for name in TargetUtilizationScaleSettings.model_fields if name != "type"}


def _scale_type(value: Any) -> Any:
    """Azure's spellings (`Default`, `TargetUtilization`) as the models' literals; without a type,
    the kind its keys say (Azure's Kubernetes default is target_utilization)."""
    if not isinstance(value, dict):
        return value
    value = dict(value)
    kind = value.get("type")
    if isinstance(kind, str):
        value["type"] = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", kind.strip()).lower()
    elif kind is None:
        value["type"] = "target_utilization" if _TARGET_UTILIZATION_KEYS & value.keys() else "default"
    return value


ScaleSettings = Annotated[
    Union[DefaultScaleSettings, TargetUtilizationScaleSettings],
    Field(discriminator="type"),
    BeforeValidator(_scale_type),
]


class ResourceSettings(SpecModel):
    """A Kubernetes container's requests or limits (strings such as "0.5", "1Gi")."""

    cpu: OptStr = None
    memory: OptStr = None
    gpu: OptStr = Field(None, alias="nvidia.com/gpu")


class ResourceRequirements(SpecModel):
    requests: ResourceSettings | None = None
    limits: ResourceSettings | None = None


# ---- the deployment ---------------------------------------------------------------------------


class OnlineDeployment(SpecModel):
    """An online deployment (``az ml online-deployment create -f``), managed or Kubernetes."""

    name: DeploymentName
    endpoint_name: EndpointName
    type: Annotated[Literal["managed", "kubernetes"], LowerStr] = "managed"
    description: str | None = None
    tags: Tags = Field(default_factory=dict)
    model: ModelValue | None = None
    model_mount_path: str | None = None  # custom containers only
    code_configuration: CodeConfiguration | None = None
    environment: EnvironmentValue | None = None
    environment_variables: EnvironmentVariables = Field(default_factory=dict)
    # Managed: required (a VM size). Kubernetes: an InstanceType name, Azure's default
    # `defaultinstancetype` when left out (None here).
    instance_type: str | None = None
    instance_count: int = Field(1, ge=1, le=MAX_NODES)
    app_insights_enabled: bool = False
    scale_settings: ScaleSettings = Field(default_factory=DefaultScaleSettings)
    request_settings: RequestSettings = Field(default_factory=RequestSettings)
    liveness_probe: LivenessProbeSettings = Field(default_factory=LivenessProbeSettings)
    readiness_probe: ProbeSettings = Field(default_factory=ProbeSettings)
    egress_public_network_access: Annotated[Literal["enabled", "disabled"] | None, LowerStr] = None
    private_network_connection: bool | None = None
    data_collector: dict[str, Any] | None = None
    resources: ResourceRequirements | None = None  # Kubernetes only
    # Read-only, server-populated: present in `az ml online-deployment show` output, ignored on create.
    id: str | None = None
    provisioning_state: str | None = None
    properties: dict[str, Any] | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, value: Any) -> Any:
        return _model_ref(value) if isinstance(value, str) else value

    @field_validator("scale_settings", "request_settings", "liveness_probe", "readiness_probe", mode="before")
    @classmethod
    def _empty_object(cls, value: Any) -> Any:
        # `request_settings:` with nothing under it means Azure's defaults.
        return {} if value is None else value

    @property
    def is_no_code(self) -> bool:
        """No scoring script: the MLflow model is served from its own flavour (no-code deployment)."""
        return self.code_configuration is None

    @property
    def target_concurrency(self) -> float:
        """In-flight requests per replica the autoscaler aims for."""
        settings = self.scale_settings
        if isinstance(settings, TargetUtilizationScaleSettings) and settings.target_concurrency is not None:
            return settings.target_concurrency
        return float(self.request_settings.max_concurrent_requests_per_instance)

    def check_model_type(self, model_type: str) -> None:
        """For a registered model (known only once resolved): a no-code deployment needs an MLflow model."""
        problem = _no_code_problem(self, model_type)
        if problem:
            raise InvalidSpecError(f"online deployment '{self.name}': {problem}",
                                   details={"field": "code_configuration"})

    @model_validator(mode="after")
    def _consistent(self) -> OnlineDeployment:
        problems: list[Problem] = []
        if self.type == "managed" and not self.instance_type:
            problems.append(((), "missing required key 'instance_type' in managed online deployment: the VM size "
                             "of each replica, e.g. 'instance_type: Standard_DS3_v2'", None))
        limit = MAX_REQUEST_TIMEOUT_MS[self.type]
        if self.request_settings.request_timeout_ms > limit:
            problems.append((("request_settings", "request_timeout_ms"),
                             f"{self.request_settings.request_timeout_ms} ms is above the {limit} ms a {self.type} "
                             f"deployment allows", self.request_settings.request_timeout_ms))
        if self.resources is not None and self.type != "kubernetes":
            problems.append((("resources",), "'resources' (requests and limits) is for type: kubernetes deployments; "
                             "a managed deployment's replicas are sized by instance_type", None))
        if self.egress_public_network_access is not None and self.type == "kubernetes":
            problems.append((("egress_public_network_access",), "'egress_public_network_access' is for managed "
                             "deployments; a Kubernetes deployment has no such setting", None))
        model_type = self.model.type if isinstance(self.model, DeploymentModel) else None
        if self.model is None or model_type is not None:
            problem = _no_code_problem(self, model_type)
            if problem:
                problems.append(((), problem, None))
        if self.environment is None and self.code_configuration is not None:
            problems.append(((), "missing required key 'environment' in online deployment: a scoring script runs in "
                             "an environment ('azureml:<name>:<version>', or inline: image and conda_file); only an "
                             "MLflow model served without a scoring script may leave it out", None))
        raise_at("OnlineDeployment", problems)
        return self


def _no_code_problem(deployment: OnlineDeployment, model_type: str | None) -> str | None:
    """Why a deployment without code_configuration cannot be served, or None."""
    if deployment.code_configuration is not None:
        return None
    if deployment.model is None:
        return ("missing required key 'code_configuration' in online deployment (code and scoring_script): only an "
                "MLflow model is served without a scoring script, and this deployment has no model")
    if model_type != "mlflow_model":
        return (f"missing required key 'code_configuration' in online deployment (code and scoring_script): the model "
                f"is a {model_type or 'model of unknown type'}, and only an MLflow model (type: mlflow_model) is "
                "served without a scoring script")
    return None
