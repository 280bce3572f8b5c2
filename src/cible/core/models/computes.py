"""Compute specs, one model per ``type:`` (Azure reference §2).

The loader lowercases ``type`` first because Azure accepts ``AmlCompute``.
(pydantic forbids a before-validator on a discriminator field, so the models
themselves only accept the lowercase values.)
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from cible.core.naming import ComputeName

from .common import LowerStr, OptStr, SpecModel, StrMap
from .compute_schedules import ComputeSchedules
from .jobs import MAX_NODES
from .kubernetes import (
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_TYPE,
    CibleKubernetesSettings,
    InstanceType,
    check_namespace,
)

_ISO_PARTS = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def idle_time_seconds(minutes: int | None, iso: str | None) -> float | None:
    """The idle shutdown time: `idle_time_before_shutdown_minutes` wins over the deprecated ISO
    form (PT30M), as on Azure; None when neither is set."""
    if minutes is not None:
        return minutes * 60.0
    if not iso:
        return None
    match = _ISO_PARTS.fullmatch(iso.upper())
    if not match or not any(match.groups()):
        raise ValueError(f"{iso!r} is not an ISO-8601 duration such as 'PT30M' or 'PT90S' (days, hours, "
                         "minutes, seconds)")
    days, hours, minutes_, seconds = (float(g) if g else 0.0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes_ * 60 + seconds


# ---- shared sub-objects -----------------------------------------------------


class UserAssignedIdentity(SpecModel):
    resource_id: str
    principal_id: str | None = None
    client_id: str | None = None


class IdentityConfiguration(SpecModel):
    type: Annotated[
        Literal["system_assigned", "user_assigned", "none", "system_assigned,user_assigned"], LowerStr
    ]
    user_assigned_identities: list[UserAssignedIdentity] | None = None
    principal_id: str | None = None
    tenant_id: str | None = None


class NetworkSettings(SpecModel):
    vnet_name: str | None = None
    subnet: str | None = None
    public_ip_address: str | None = None  # RO
    private_ip_address: str | None = None  # RO


class ComputeBase(SpecModel):
    """Fields every compute YAML has (SDK ``ComputeSchema``)."""

    name: ComputeName
    description: str | None = None
    tags: StrMap = Field(default_factory=dict)
    location: str | None = None
    # Read-only, server-populated.
    id: str | None = None
    provisioning_state: str | None = None
    provisioning_errors: Any = None
    created_on: OptStr = None


# ---- amlcompute ---------------------------------------------------------------

MAX_IDLE_TIME_BEFORE_SCALE_DOWN_S = 30 * 86400  # 30 days
MAX_IDLE_TIME_BEFORE_SHUTDOWN_MINUTES = 4320  # 3 days, as idle_time_before_shutdown_minutes allows


class AmlComputeSshSettings(SpecModel):
    admin_username: str
    admin_password: str | None = None
    ssh_key_value: str | None = None

    @model_validator(mode="after")
    def _password_or_key(self) -> AmlComputeSshSettings:
        if self.admin_password is None and self.ssh_key_value is None:
            raise ValueError("ssh_settings needs 'admin_password' or 'ssh_key_value'")
        return self


class CibleClusterSettings(SpecModel):
    """cible's own settings for a cluster, under the key `cible:`. Azure's YAML has no such
    key, so files written for Azure simply lack it and get these defaults."""

    # Which node provider makes the nodes: `local` (this machine) or `ray` (a Ray cluster the
    # server is configured for); none: the workspace's default, stored at create.
    provider: Literal["local", "ray", "ssh", "slurm", "kubernetes"] | None = None
    # provider ssh: the attached machines (virtualmachine computes) its nodes run on, one node each.
    hosts: list[ComputeName] | None = None
    # provider slurm: the Slurm compute (type: slurm) whose Slurm jobs are its nodes, submitted with
    # the cluster creator's credential there.
    slurm: ComputeName | None = None
    overcommit: bool = False  # start nodes of a size this host cannot hold
    # Drills on low-priority clusters: evictions per node-hour, drawn at random.
    preemptions_per_node_hour: float = Field(0.0, ge=0)
    # A job whose node stops heartbeating or vanishes: back to the queue, or failed.
    # (A preempted job is always requeued, as on Azure.)
    on_node_failure: Literal["requeue", "fail"] = "requeue"


class CibleInstanceSettings(SpecModel):
    """cible's own settings for a compute instance, under the key `cible:` (Azure files lack it)."""

    provider: Literal["local", "ray"] | None = None  # as for clusters
    overcommit: bool = False
    os_disk_gb: float = Field(120.0, gt=0)  # Azure's OS disk for instances
    idle_warning_minutes: float = Field(5.0, ge=0)  # a warning is recorded this long before idle shutdown


class AmlCompute(ComputeBase):
    """A compute cluster: scales between min and max nodes."""

    type: Literal["amlcompute"] = "amlcompute"
    size: str = "Standard_DS3_v2"
    tier: Annotated[Literal["dedicated", "low_priority"], LowerStr] = "dedicated"
    # Bounded so that no stored number can make the reconciler plan without end (a cluster of
    # 10^29 nodes); far above what a quota or this machine grants.
    min_instances: int = Field(0, ge=0, le=MAX_NODES)
    max_instances: int = Field(1, ge=1, le=MAX_NODES)  # docs default; the SDK class says 4 (see reference §12)
    # Seconds. Bounded so a stored value always fits a timedelta (10^29 once stopped every
    # cluster's pass); a node meant to stay up is what min_instances is for.
    idle_time_before_scale_down: int = Field(120, ge=0, le=MAX_IDLE_TIME_BEFORE_SCALE_DOWN_S)
    ssh_public_access_enabled: bool | None = None
    ssh_settings: AmlComputeSshSettings | None = None
    network_settings: NetworkSettings | None = None
    identity: IdentityConfiguration | None = None
    enable_node_public_ip: bool = True
    cible: CibleClusterSettings | None = None
    # Read-only state reported by `az ml compute show`.
    allocation_state: str | None = None
    current_node_count: int | None = None
    target_node_count: int | None = None
    node_state_counts: dict[str, int] | None = None

    @model_validator(mode="after")
    def _min_not_above_max(self) -> AmlCompute:
        if self.min_instances > self.max_instances:
            raise ValueError(
                f"min_instances ({self.min_instances}) must not exceed max_instances ({self.max_instances})"
            )
        settings = self.cible
        if settings is not None and (settings.provider == "ssh") != bool(settings.hosts):
            raise ValueError("cible.hosts names the attached machines of a cluster of cible.provider: ssh, and only "
                             "of one: give both or neither")
        if settings is not None and settings.hosts and self.max_instances > len(settings.hosts):
            raise ValueError(f"max_instances ({self.max_instances}) is more than its attached machines "
                             f"({len(settings.hosts)} in cible.hosts): each node is one machine")
        return self


# ---- computeinstance ------------------------------------------------------------


class AssignedUser(SpecModel):
    user_tenant_id: str
    user_object_id: str


class ComputeInstanceSshSettings(SpecModel):
    ssh_key_value: str | None = None
    admin_username: str | None = None  # RO ("azureuser")
    ssh_port: int | None = None  # RO


class ScriptReference(SpecModel):
    path: str | None = None
    command: str | None = None
    timeout_minutes: int | None = Field(None, ge=1)


class SetupScripts(SpecModel):
    creation_script: ScriptReference | None = None
    startup_script: ScriptReference | None = None


class ComputeInstance(ComputeBase):
    """A single-user development VM."""

    type: Literal["computeinstance"] = "computeinstance"
    size: str = "Standard_DS3_v2"
    create_on_behalf_of: AssignedUser | None = None
    ssh_public_access_enabled: bool | None = None
    ssh_settings: ComputeInstanceSshSettings | None = None
    network_settings: NetworkSettings | None = None
    identity: IdentityConfiguration | None = None
    enable_node_public_ip: bool | None = None
    idle_time_before_shutdown: str | None = None  # deprecated ISO-8601 form
    # Azure's minimum is 15; cible takes any whole minute (and the ISO form takes seconds).
    idle_time_before_shutdown_minutes: int | None = Field(None, ge=1, le=MAX_IDLE_TIME_BEFORE_SHUTDOWN_MINUTES)
    schedules: ComputeSchedules | None = None
    setup_scripts: SetupScripts | None = None
    custom_applications: list[dict[str, Any]] | None = None
    cible: CibleInstanceSettings | None = None
    # Read-only state reported by `az ml compute show`.
    state: str | None = None
    last_operation: dict[str, Any] | None = None
    services: list[dict[str, Any]] | None = None
    os_image_metadata: dict[str, Any] | None = None

    @field_validator("idle_time_before_shutdown")
    @classmethod
    def _iso_duration(cls, value: str | None) -> str | None:
        if value is not None and idle_time_seconds(None, value) > MAX_IDLE_TIME_BEFORE_SHUTDOWN_MINUTES * 60:
            # The same bound as the minutes form (idle_time_seconds raises on a malformed one).
            raise ValueError(f"{value!r} is longer than {MAX_IDLE_TIME_BEFORE_SHUTDOWN_MINUTES} minutes (3 days)")
        return value

    @model_validator(mode="after")
    def _ssh_needs_key(self) -> ComputeInstance:
        # The SDK refuses public SSH access without a key to log in with.
        if self.ssh_public_access_enabled and not (self.ssh_settings and self.ssh_settings.ssh_key_value):
            raise ValueError("ssh_public_access_enabled: true needs ssh_settings.ssh_key_value")
        return self


# ---- attached computes ------------------------------------------------------------


class KubernetesCompute(ComputeBase):
    """An attached Kubernetes cluster (Azure: an Arc-enabled or AKS cluster with the ML extension);
    its instance types and cible's settings are in cible.core.models.kubernetes."""

    type: Literal["kubernetes"] = "kubernetes"
    resource_id: str | None = None  # Azure's cluster id; cible reaches the cluster through the kubeconfig
    namespace: str = "default"
    properties: dict[str, Any] | None = None
    identity: IdentityConfiguration | None = None
    cible: CibleKubernetesSettings | None = None
    # Read-only, set at attach: the InstanceType objects the cluster defines, and where its API server is.
    cluster_instance_types: dict[str, InstanceType] | None = None
    api_server: str | None = None

    @field_validator("namespace")
    @classmethod
    def _a_namespace(cls, value: str) -> str:
        return check_namespace(value)

    @property
    def settings(self) -> CibleKubernetesSettings:
        return self.cible or CibleKubernetesSettings()

    def instance_types(self) -> dict[str, InstanceType]:
        """Every instance type jobs may name: Azure's default, the cluster's, then the YAML's."""
        return {DEFAULT_INSTANCE_TYPE: DEFAULT_TYPE, **(self.cluster_instance_types or {}),
                **self.settings.instance_types}


class VirtualMachineSshSettings(SpecModel):
    admin_username: str | None = None
    # Refused: cible logs in with keys only, so that no password is ever stored (Azure keeps it in
    # its own secret store; a self-hosted workspace has none).
    admin_password: str | None = None
    ssh_port: int = Field(22, ge=1, le=65535)
    # A private key on the workspace server's machine, stored as its path and read at each login.
    ssh_private_key_file: str | None = None

    @field_validator("admin_password")
    @classmethod
    def _no_password(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError("cible logs in to attached machines with SSH keys only and never stores a password: "
                             "remove admin_password and give ssh_private_key_file (a private key on the workspace "
                             "server's machine whose public key is in the host's authorized_keys)")
        return None


class HostFacts(SpecModel):
    """An attached host as probed at attach (read-only)."""

    python: str
    python_version: str
    machine: str
    system: str
    cpus: int
    memory_gb: float
    gpus: int = 0
    home: str | None = None


class CibleVirtualMachineSettings(SpecModel):
    """cible's own settings for an attached machine, under the key `cible:`."""

    # Log in with the keys of the server's ssh-agent (SSH_AUTH_SOCK) instead of a key file: for a
    # key with a passphrase, which cible never stores.
    use_ssh_agent: bool = False
    python: str = "python3"  # the host's interpreter (≥ 3.10, stdlib only): the agent runs on it
    # Check the host key offered at attach against this (`ssh-keygen -lf` on the host prints it)
    # instead of trusting it on first use.
    expected_host_key_fingerprint: str | None = Field(None, pattern=r"^SHA256:[A-Za-z0-9+/]{43}=?$")
    # How the machine's agent reaches the server: auto (directly when it can, else through a port
    # forwarded back over SSH), always (the SSH tunnel), never (directly only).
    tunnel: Literal["auto", "always", "never"] = "auto"


class CibleSlurmSettings(SpecModel):
    """cible's own settings for a Slurm cluster, under the key `cible:`."""

    use_ssh_agent: bool = False  # log in to the login host with the server's ssh-agent keys
    python: str = "python3"  # the interpreter on the Slurm nodes (≥ 3.10, stdlib only): the pilot runs on it
    expected_host_key_fingerprint: str | None = Field(None, pattern=r"^SHA256:[A-Za-z0-9+/]{43}=?$")
    # Where the Slurm nodes reach the workspace server (default: the server's own URL). Its nodes,
    # not the login host, run the jobs, so an SSH tunnel to the login host would not reach them.
    server_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/.*)?$")
    # A folder of the submitting user's on the filesystem the login host and the nodes share (their
    # home, on most clusters); default ~/.cible-agent.
    agent_dir: str | None = Field(None, pattern=r"^(~/|/)[A-Za-z0-9_./@+=,-]*$")
    # Variables set for cible's Slurm commands and the jobs' pilots (SLURM_CONF of a cluster whose
    # configuration is not in /etc/slurm, PATH to its commands…).
    environment: dict[str, str] = Field(default_factory=dict)
    # How long a job's Slurm allocation is kept once its run Completed, for the next job of the same
    # user asking for the same resources (it then starts without a new sbatch and its wait for
    # Slurm's scheduler); 0: each job's allocation ends with it.
    keep_allocation_s: int = Field(60, ge=0, le=3600)

    @field_validator("environment")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"environment: '{name}' is not a variable name (letters, digits and _)")
            if "\n" in text or "\0" in text:
                raise ValueError(f"environment.{name}: a value on one line")
        return value


def check_login(settings: VirtualMachineSshSettings | None, use_ssh_agent: bool, where: str) -> None:
    """ValueError unless `settings` say who cible logs in as on `where`, and with which key."""
    if settings is None or not settings.admin_username:
        raise ValueError(f"ssh_settings.admin_username: the user cible logs in as on {where} is required")
    if not settings.ssh_private_key_file and not use_ssh_agent:
        raise ValueError("ssh_settings.ssh_private_key_file is required (a private key on the workspace server's "
                         "machine), or cible.use_ssh_agent: true to log in with the server's ssh-agent")


def ssh_address(resource_id: str) -> tuple[str, int | None]:
    """The host (and port, when given) an attached machine's `resource_id` names: `box.example.com`,
    `10.0.0.4`, `[fd00::4]` or `ssh://box.example.com:2222`. An Azure resource id names a VM
    cible cannot reach, so it is refused with what to write instead."""
    from urllib.parse import urlsplit

    value = resource_id.strip()
    if value.lower().startswith(("/subscriptions/", "subscriptions/")):
        raise ValueError(f"'{value}' is an Azure resource id; cible reaches the machine over SSH: give its host "
                         "name or address instead (box.example.com, 10.0.0.4, or ssh://box.example.com:2222)")
    try:
        parts = urlsplit(value if value.startswith("ssh://") else f"ssh://{value}")
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (parts is None or parts.scheme != "ssh" or not parts.hostname or parts.path or parts.query
            or parts.username or any(c.isspace() for c in value)):
        raise ValueError(f"'{value}' is not a host: give a host name or address (box.example.com, 10.0.0.4, "
                         "[fd00::4]) or ssh://host:port")
    return parts.hostname, port


class VirtualMachineCompute(ComputeBase):
    """An existing machine attached over SSH; `resource_id` is its address (Azure's is an ARM id)."""

    type: Literal["virtualmachine"] = "virtualmachine"
    resource_id: str
    ssh_settings: VirtualMachineSshSettings
    compute_location: str | None = None  # RO
    cible: CibleVirtualMachineSettings | None = None
    # Read-only, set at attach: the pinned host key and what the host is.
    host_key: str | None = None
    host_key_fingerprint: str | None = None
    host_facts: HostFacts | None = None

    @field_validator("resource_id")
    @classmethod
    def _an_address(cls, value: str) -> str:
        ssh_address(value)
        return value.strip()

    @model_validator(mode="after")
    def _login(self) -> VirtualMachineCompute:
        check_login(self.ssh_settings, self.cible is not None and self.cible.use_ssh_agent, "the host")
        return self

    @property
    def ssh_port(self) -> int:
        """`ssh://host:port` in resource_id wins over ssh_settings.ssh_port (22 by default)."""
        return ssh_address(self.resource_id)[1] or self.ssh_settings.ssh_port

    @property
    def host(self) -> str:
        return ssh_address(self.resource_id)[0]


class SlurmCompute(ComputeBase):
    """A Slurm cluster (cible's own type: Azure has none). cible submits through its login host over
    SSH (`login`), or through this machine's Slurm commands when the server runs on a login node
    (`login` left out). Each job is one Slurm job submitted as its user's own Slurm identity (their
    credential, `cible compute set-credential`); the compute's `ssh_settings` are the attaching
    user's. `partition`, `qos` and `account` are the defaults a job's
    `resources.properties.slurm` overrides."""

    type: Literal["slurm"] = "slurm"
    login: str | None = None  # host, [v6] or ssh://host:port; None: the Slurm commands of the server's machine
    ssh_settings: VirtualMachineSshSettings | None = None
    partition: str | None = Field(None, pattern=r"^[A-Za-z0-9_.+:@,-]+$")
    qos: str | None = Field(None, pattern=r"^[A-Za-z0-9_.+:@,-]+$")
    account: str | None = Field(None, pattern=r"^[A-Za-z0-9_.+:@,-]+$")
    cible: CibleSlurmSettings | None = None
    # Read-only, set at attach: the login host's pinned key, and the cluster's partitions.
    host_key: str | None = None
    host_key_fingerprint: str | None = None
    partitions: list[str] | None = None

    @field_validator("login")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        ssh_address(value)
        return value.strip()

    @model_validator(mode="after")
    def _login_settings(self) -> SlurmCompute:
        if self.login is None:
            if self.ssh_settings is not None:
                raise ValueError("ssh_settings: give login (the login host's address) too, or leave both out to "
                                 "use the Slurm commands of the server's machine")
            return self
        check_login(self.ssh_settings, self.cible is not None and self.cible.use_ssh_agent, "the login host")
        return self

    @property
    def ssh_port(self) -> int:
        port = ssh_address(self.login)[1] if self.login else None
        return port or (self.ssh_settings.ssh_port if self.ssh_settings else 22)

    @property
    def host(self) -> str | None:
        return ssh_address(self.login)[0] if self.login else None


_SPARK_MASTER = re.compile(r"spark://[A-Za-z0-9_.\[\]:-]+:\d+(,[A-Za-z0-9_.\[\]:-]+:\d+)*")


class CibleSparkSettings(SpecModel):
    """cible's own settings for a `synapsespark` compute, under the key `cible:` (Azure files lack it)."""

    # A Spark standalone master cible does not own (`spark://host:port`, or several for a master with
    # standby masters: `spark://h1:7077,h2:7077`): jobs' drivers run on the workspace's machine against it.
    # Without it, cible makes the pool itself from nodes of its own (node_size, scale_settings).
    master_url: str | None = None
    provider: Literal["local", "ray"] | None = None  # a pool's nodes: as for clusters
    overcommit: bool = False

    @field_validator("master_url")
    @classmethod
    def _spark_url(cls, value: str | None) -> str | None:
        if value is not None and not _SPARK_MASTER.fullmatch(value.strip()):
            raise ValueError(f"{value!r} is not a Spark standalone master URL like spark://host:7077 "
                             "(or spark://host1:7077,host2:7077 with standby masters)")
        return value.strip() if value is not None else None


class SparkScaleSettings(SpecModel):
    min_node_count: int | None = Field(None, ge=0, le=MAX_NODES)
    max_node_count: int | None = Field(None, ge=1, le=MAX_NODES)
    auto_scale_enabled: bool | None = None


class SparkAutoPauseSettings(SpecModel):
    delay_in_minutes: int | None = Field(None, ge=1, le=MAX_IDLE_TIME_BEFORE_SCALE_DOWN_S // 60)
    auto_pause_enabled: bool | None = None


class SynapseSparkCompute(ComputeBase):
    """A Spark pool: Azure's attached Synapse Spark pool. With `cible.master_url`, a Spark cible does not
    own; without, a pool cible makes of its own nodes, sized and scaled by the fields Azure only reports
    (node_size, node_count, scale_settings, auto_pause_settings)."""

    type: Literal["synapsespark"] = "synapsespark"
    resource_id: str | None = None  # Azure's pool; cible has no use for it (its absence is no error here)
    identity: IdentityConfiguration | None = None
    node_family: str | None = None
    node_size: str | None = None  # Synapse's Small ... XXLarge (memory optimized), or a VM size
    node_count: int | None = Field(None, ge=1, le=MAX_NODES)
    spark_version: OptStr = None  # the Spark line its jobs run (an attached master's own version)
    scale_settings: SparkScaleSettings | None = None
    auto_pause_settings: SparkAutoPauseSettings | None = None
    cible: CibleSparkSettings | None = None

    @property
    def master_url(self) -> str | None:
        return self.cible.master_url if self.cible else None


Compute = Annotated[
    Union[AmlCompute, ComputeInstance, KubernetesCompute, VirtualMachineCompute, SlurmCompute, SynapseSparkCompute],
    Field(discriminator="type"),
]

COMPUTE_TYPES: dict[str, type[ComputeBase]] = {
    "amlcompute": AmlCompute,
    "computeinstance": ComputeInstance,
    "kubernetes": KubernetesCompute,
    "virtualmachine": VirtualMachineCompute,
    "slurm": SlurmCompute,
    "synapsespark": SynapseSparkCompute,
}
