"""Computes: clusters, instances, serverless pools and `local`; their nodes, providers and power verbs."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cible.server.schemas.common import Envelope, IsoTime, Number, Page


class ComputeCost(Envelope):
    """What a compute's nodes cost so far (`compute show`)."""

    currency: str = Field(description="USD")
    so_far: Number = Field(description="what its nodes cost so far")
    idle: Number = Field(description="the part spent idle")
    node_hours: Number = Field(description="its nodes' hours")
    note: str | None = Field(None, description="where the prices come from")


class ProviderStatus(Envelope):
    """A node provider (local, ray): whether it can be used, whether its engine answers, and why not.
    Each provider adds what it knows of its capacity (local: `host`; ray: `address`, `ray_nodes`, ...)."""

    name: str = Field(description="the provider's name")
    available: bool = Field(description="it can be used (configured)")
    reachable: bool | None = Field(None, description="its engine answers")
    error: str | None = Field(None, description="why it is unavailable or unreachable, and the fix")
    hint: str | None = Field(None, description="how to fix it, when `error` does not say")
    host: dict[str, Any] | None = Field(None, description="local: this machine's vcpus, memory_gb and gpus")
    address: str | None = Field(None, description="ray: the Ray cluster's address")
    ray_nodes: int | None = Field(None, description="ray: the Ray cluster's nodes")
    autoscaling: bool | None = Field(None, description="ray: the Ray cluster adds machines itself")
    namespace: str | None = Field(None, description="ray: the namespace of the workspace's actors")
    waiting: dict[str, str] | None = Field(None, description="ray: computes whose nodes wait for room, and why")


class ProviderList(Envelope):
    """Every node provider the server knows, usable or not."""

    value: list[ProviderStatus] = Field(description="the providers, by name")
    count: int = Field(description="how many")
    default: str = Field(description="the provider of computes whose YAML names none")


class Idleness(Envelope):
    """Whether a compute instance is idle now, why not, and when idle shutdown stops it."""

    idle: bool = Field(description="it is idle now")
    why_not: str | None = Field(None, description="why it is not idle (or why idle shutdown does not apply)")
    idle_since: IsoTime | None = Field(None, description="since when it is idle (ISO 8601)")
    stops_at: IsoTime | None = Field(None, description="when idle shutdown stops it if nothing happens (ISO 8601)")


class InstanceEvent(Envelope):
    at: IsoTime = Field(description="when (ISO 8601)")
    kind: str = Field(description="Started, Stopped, Restarting, Snoozed, IdleShutdownWarning, ...")
    message: str | None = Field(None, description="what happened")


class LastOperation(Envelope):
    """Azure's last_operation of an instance: its last start, stop or restart."""

    operation_name: str = Field(description="Start, Stop or Restart")
    operation_time: IsoTime = Field(description="when (ISO 8601)")
    operation_status: str = Field(description="Succeeded")


class InstanceNode(Envelope):
    """The node a compute instance runs on now."""

    node_id: str
    state: str = Field(description="the node's state: preparing, idle, running, ...")
    job: str | None = Field(None, description="the job it runs")
    sessions: list[Any] | None = Field(None, description="the sessions open on it")
    last_activity_at: IsoTime | None = Field(None, description="when a session was last seen (ISO 8601)")


class NextScheduled(Envelope):
    action: str = Field(description="start or stop")
    at: IsoTime = Field(description="when (ISO 8601)")


class Compute(Envelope):
    """A compute as `az ml compute show` prints it: its YAML fields (passed through), then the
    server's. Clusters, instances and serverless pools have node counts and cost; instances
    their state, idleness, events and owner; `show` adds the provider's status."""

    name: str = Field(description="the compute's name")
    type: str = Field(description="local, amlcompute, computeinstance, serverless, or an attached type")
    description: str | None = Field(None, description="its description")
    tags: dict[str, Any] | None = Field(None, description="its tags")
    size: str | None = Field(None, description="its VM size (clusters and instances)")
    tier: str | None = Field(None, description="dedicated or low_priority (clusters)")
    min_instances: int | None = Field(None, description="nodes kept even when idle (clusters)")
    max_instances: int | None = Field(None, description="the most nodes (clusters)")
    idle_time_before_scale_down: int | None = Field(None, description="seconds a node idles before it goes")
    cible: dict[str, Any] | None = Field(None, description="cible's settings: the node provider, overcommit, ...")
    provisioning_state: str = Field(description="Succeeded, or Deleting while a cluster drains")
    created_on: IsoTime | None = Field(None, description="when it was created (ISO 8601)")
    created_by: str | None = Field(None, description="who created it, as the client said")
    state: str | None = Field(None, description="Running (local); an instance's Creating, Running, Stopped, ...")
    max_concurrent_jobs: int | None = Field(None, description="local: jobs run at once")
    allocation_state: str | None = Field(None, description="Steady or Resizing")
    current_node_count: int | None = Field(None, description="its live nodes")
    target_node_count: int | None = Field(None, description="the nodes it is sized to")
    node_state_counts: dict[str, int] | None = Field(None, description="its nodes by state")
    quota_wait: str | None = Field(None, description="why nodes wait for quota")
    cost: ComputeCost | None = Field(None, description="what its nodes cost so far")
    provider_status: ProviderStatus | None = Field(None, description="its node provider's status (show)")
    gpu_usage: dict[str, list[dict[str, Any]]] | None = Field(
        None, description="its live nodes' GPUs as their agents last read them (show): index, uuid, name, "
                          "utilization_percent, memory_used_mb, memory_total_mb, by node id")
    warnings: list[Any] | None = Field(None, description="what to know of it (shared vCPUs, a full disk, ...)")
    power_reason: str | None = Field(None, description="instance: why it has its power (on, off)")
    owner: str | None = Field(None, description="instance: the user it is assigned to")
    idleness: Idleness | None = Field(None, description="instance: idle or not, and when it stops")
    snoozed_until: IsoTime | None = Field(None, description="instance: idle shutdown postponed until (ISO 8601)")
    events: list[InstanceEvent] | None = Field(None, description="instance: what happened to it, oldest first")
    last_operation: LastOperation | None = Field(None, description="instance: its last start, stop or restart")
    node: InstanceNode | None = Field(None, description="instance: the node it runs on")
    disk: dict[str, Any] | None = Field(None, description="instance: its OS disk's use")
    next_scheduled: NextScheduled | None = Field(None, description="instance: its next scheduled start or stop")
    resource_id: str | None = Field(None, description="attached machine: its address (host, or ssh://host:port)")
    host_key: str | None = Field(None, description="attached machine: the host key pinned at attach (public)")
    host_key_fingerprint: str | None = Field(None, description="attached machine: the pinned key's SHA256 fingerprint")
    host_facts: dict[str, Any] | None = Field(None, description="attached machine: its Python, CPUs, memory, GPUs")
    previous_host_key_fingerprint: str | None = Field(None, description="replace-host-key: the key pinned before")
    login: str | None = Field(None, description="slurm: its login host (host, or ssh://host:port); absent: the "
                                                "server machine's own Slurm commands")
    partition: str | None = Field(None, description="slurm: the default partition of its jobs")
    qos: str | None = Field(None, description="slurm: the default QOS of its jobs")
    account: str | None = Field(None, description="slurm: the default account of its jobs")
    partitions: list[str] | None = Field(None, description="slurm: its partitions, as sinfo listed them at attach")


ComputePage = Page[Compute]


class Credential(Envelope):
    """Who a user's jobs run as on a Slurm cluster (`set-credential`): never a key, nor its path."""

    user: str = Field(description="the workspace user (the X-Cible-User the client sent; \"\" without one)")
    username: str = Field(description="their user on the login host: the Slurm identity their jobs run as")
    compute: str | None = Field(None, description="the Slurm compute")
    use_ssh_agent: bool | None = Field(None, description="it logs in with the server's ssh-agent")
    created_at: IsoTime | None = Field(None, description="when it was set (ISO 8601)")


CredentialPage = Page[Credential]


class Node(Envelope):
    """A compute's node, as `az ml compute list-nodes` prints it."""

    node_id: str
    node_state: str = Field(description="preparing, idle, running, unusable, leaving, preempted")
    current_job_name: str | None = Field(None, description="the job it runs")
    private_ip_address: str | None = Field(None, description="where other nodes reach it")
    public_ip_address: str | None = Field(None, description="always null")
    port: int | None = Field(None, description="always null")
    run_id: str | None = Field(None, description="the job it runs")
    created_at: IsoTime | None = Field(None, description="when it was requested (ISO 8601)")
    last_heartbeat: IsoTime | None = Field(None, description="its agent's last heartbeat (ISO 8601)")
    usage: dict[str, Any] | None = Field(None, description="what it uses, as its agent reported")


NodePage = Page[Node]


class PowerRequest(Envelope):
    """An instance's start, stop or restart, accepted: the reconciler carries it out."""

    name: str = Field(description="the instance")
    power: str = Field(description="the power asked for: on, off or restart")
    requested: str = Field(description="the verb: start, stop or restart")


class Snoozed(Envelope):
    name: str = Field(description="the instance")
    snoozed_until: IsoTime = Field(description="idle shutdown does not happen before this (ISO 8601)")


class Terminal(Envelope):
    """Where a shell on an instance's node runs."""

    name: str = Field(description="the instance")
    node_id: str = Field(description="its node")
    provider: str = Field(description="the node's provider")
    owner: str | None = Field(None, description="the user it is assigned to")
    user: str | None = Field(None, description="who asks, as the client said")
    root: str = Field(description="the node's working folder")
    home: str = Field(description="the instance's home folder")
    note: str | None = Field(None, description="a warning when the instance is someone else's")


class Preempted(Envelope):
    node_id: str = Field(description="the node evicted")
    compute: str = Field(description="its cluster")
    preempted: bool = Field(description="true")
