"""Attached Kubernetes clusters as the server sees them: attach, instance types, and the pools.

- **Attach** (`attach_kubernetes`, before anything is stored): the kubeconfig is checked (an
  absolute path to a file on the server's machine; its path is stored, never its content), the API
  server must answer and the namespace exist, and the cluster's InstanceType objects (Azure's CRD)
  are read and kept read-only in `cluster_instance_types`.
- **Pools.** A job (or replica) on compute `k8s` with `resources.instance_type: small` runs on the
  pool `k8s:small`: a hidden compute row (type `kubernetespool`) that the cluster reconciler plans
  as a cluster of pods of that type, from 0 to `cible.max_instances`, each kept
  `cible.idle_time_before_scale_down` after its last job. The row is made (or refreshed from the
  compute) in the submit's own transaction; it carries what the provider needs (cluster, namespace,
  image, the instance type), so it outlives a change of the compute until its nodes go.
- The pods cost nothing of cible's (the cluster is the user's) and count against no quota.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from cible.backends.base.contract import NodeProvider
from cible.backends.kubernetes.api import ClusterAccess, KubernetesUnreachable, PodTemplate
from cible.core.catalog.queries import VmSize
from cible.core.errors import InvalidRequestError, NotFoundError
from cible.core.models.computes import AmlCompute, CibleClusterSettings, KubernetesCompute
from cible.core.models.kubernetes import DEFAULT_INSTANCE_TYPE, InstanceType
from cible.core.planning.quotas import UNMETERED_FAMILY
from cible.server.store.rows import ComputeRow

POOL_TYPE = "kubernetespool"
PROVIDER = "kubernetes"


def attach_kubernetes(entity: KubernetesCompute, provider: NodeProvider | None) -> tuple[KubernetesCompute, list[str]]:
    """The compute as stored: its cluster reached, its namespace there, its instance types read.
    Raises a 400 naming the field and the reason (`details.reason`) before anything is stored."""
    if provider is None or not (status := provider.status()).available:  # the `kubernetes` client is missing
        why = status.error if provider is not None else "it is not installed"
        raise InvalidRequestError(f"type: the kubernetes node provider is unavailable: {why} (pip install "
                                  "'cible[kubernetes]' where the server runs)", details={"field": "type"})
    from cible.backends.kubernetes import api

    settings = entity.settings
    if settings.kubeconfig is not None:
        path = Path(settings.kubeconfig)
        if not path.is_absolute():
            raise InvalidRequestError(f"cible.kubeconfig: '{settings.kubeconfig}' is not an absolute path; give the "
                                      "kubeconfig's full path on the workspace server's machine",
                                      details={"field": "cible.kubeconfig", "reason": "kubeconfig"})
        if not path.is_file():
            raise InvalidRequestError(f"cible.kubeconfig: {path} is not a file on the workspace server's machine",
                                      details={"field": "cible.kubeconfig", "reason": "kubeconfig"})
    access = access_of(entity)
    try:
        notes = [note for note in [api.check_namespace(access)] if note]
        found, more = api.cluster_instance_types(access)
        server = api.server_of(access)
    except KubernetesUnreachable as exc:
        field = {"no_namespace": "namespace", "kubeconfig": "cible.kubeconfig"}.get(exc.reason, "cible.kubeconfig")
        raise InvalidRequestError(f"{field}: {exc.message}", details={"field": field, "reason": exc.reason}) from None
    server_url = settings.server_url or getattr(provider, "url", None) or ""
    host = urlsplit(server_url).hostname or ""
    if host in ("localhost", "::1") or host.startswith("127."):  # a real pod's loopback is its own
        notes.append(f"its pods will reach the workspace server at {server_url}, a loopback address: on a cluster "
                     "whose pods are not on this machine, give cible.server_url (an address they can reach)")
    overridden = sorted(set(found) & set(settings.instance_types))
    notes += more + [f"instance type {name}: the compute's cible.instance_types replaces the cluster's InstanceType "
                     "of that name" for name in overridden]
    return entity.model_copy(update={"cluster_instance_types": found, "api_server": server}), notes


def workspace_label(token: str) -> str:
    """The label value that marks one workspace's pods, stable across its restarts and its own: several
    workspaces may share a namespace (a digest of its token, which says nothing of the token)."""
    return "ws-" + hashlib.sha256(f"cible kubernetes label\0{token}".encode()).hexdigest()[:16]


def access_of(spec: KubernetesCompute) -> ClusterAccess:
    settings = spec.settings
    return ClusterAccess(compute=spec.name, namespace=spec.namespace, kubeconfig=settings.kubeconfig,
                         context=settings.context)


def pool_name(compute: str, instance_type: str) -> str:
    return f"{compute}:{instance_type}"


def pool_spec(spec: KubernetesCompute, instance_type: str | None, instance_count: int,
              field: str = "resources.instance_type") -> dict[str, Any]:
    """The spec of the pool a job of `instance_count` pods of `instance_type` runs on (refused at
    submit when the type is unknown or the pool could never hold the job)."""
    name = instance_type or DEFAULT_INSTANCE_TYPE
    types = spec.instance_types()
    if name not in types:
        raise InvalidRequestError(
            f"{field}: compute {spec.name} has no instance type '{name}' (it has: {', '.join(sorted(types))}); "
            "define it as an InstanceType on the cluster or under cible.instance_types (then detach the compute and attach "
            "it again: its instance types are read at attach)",
            details={"field": field, "instance_types": sorted(types)})
    settings = spec.settings
    if instance_count > settings.max_instances:
        raise InvalidRequestError(
            f"resources.instance_count: {instance_count} pods, but compute {spec.name} holds at most "
            f"{settings.max_instances} of one instance type (cible.max_instances)",
            details={"field": "resources.instance_count"})
    chosen = types[name]
    return {"kind": POOL_TYPE, "compute": spec.name, "instance_type": name, "size": size_name(spec.name, name),
            "max_instances": settings.max_instances, "idle_time_before_scale_down": settings.idle_time_before_scale_down,
            "on_node_failure": settings.on_node_failure,
            "type_spec": chosen.model_dump(mode="json", by_alias=True, exclude_none=True),
            "access": dataclasses.asdict(access_of(spec)),
            "pod": {"image": settings.image, "python": settings.python, "server_url": settings.server_url,
                    "service_account": settings.service_account, "image_pull_secrets": settings.image_pull_secrets}}


def size_name(compute: str, instance_type: str) -> str:
    return f"{instance_type} ({compute})"


def pool_cluster(pool: dict[str, Any]) -> AmlCompute:
    """A pool as the cluster reconciler plans it (named as its compute: its row's name is no compute name)."""
    return AmlCompute(name=pool["compute"], size=pool["size"], min_instances=0,
                      max_instances=pool["max_instances"], idle_time_before_scale_down=pool["idle_time_before_scale_down"],
                      cible=CibleClusterSettings(provider=PROVIDER, overcommit=True,
                                                 on_node_failure=pool.get("on_node_failure", "requeue")))


def pool_size(pool: dict[str, Any]) -> VmSize:
    """A pod of the pool's instance type as a size: its limits; free (the cluster is the user's)."""
    chosen = InstanceType.model_validate(pool["type_spec"])
    return VmSize(name=pool["size"], series="Kubernetes", family=UNMETERED_FAMILY, vcpus=chosen.vcpus,
                  memory_gb=chosen.memory_gb, gpus=chosen.gpus, gpu_model=None, gpu_architecture=None, min_cuda=None,
                  category="kubernetes", compute_types=(PROVIDER,), isolated=False, low_priority_capable=False,
                  price_per_hour=0.0, retired_on=None, os_disk_gb=0, confidence="declared")


def pod_template(session: Session, pool: str) -> PodTemplate:
    """What the provider makes a pool's pods from (read from the pool's row)."""
    row = session.get(ComputeRow, pool)
    if row is None or row.compute_type != POOL_TYPE:
        raise NotFoundError(f"pool '{pool}' does not exist any more", details={"name": pool})
    spec = row.spec
    pod = spec["pod"]
    return PodTemplate(access=ClusterAccess(**spec["access"]), pool=pool, instance_type=spec["instance_type"],
                       spec=InstanceType.model_validate(spec["type_spec"]), image=pod["image"], python=pod["python"],
                       server_url=pod.get("server_url"), service_account=pod.get("service_account"),
                       image_pull_secrets=tuple(pod.get("image_pull_secrets") or ()))


def pools_of(session: Session, compute: str) -> list[ComputeRow]:
    return [row for row in session.scalars(select(ComputeRow).where(ComputeRow.compute_type == POOL_TYPE,
                                                                    ComputeRow.name.startswith(f"{compute}:",
                                                                                               autoescape=True)))]


def describe(session: Session, row: ComputeRow, pool_resource: Any) -> dict[str, Any]:
    """`compute show`'s own fields of a Kubernetes compute: its instance types, and each pool's pods at work
    (`pool_resource`: a pool's row as `show` gives a cluster)."""
    pools = []
    for pool in pools_of(session, row.name):
        shown = pool_resource(pool)
        pools.append({"instance_type": pool.spec["instance_type"], "name": pool.name,
                      "provisioning_state": pool.provisioning_state,
                      **{k: shown[k] for k in ("current_node_count", "node_state_counts", "allocation_state")
                         if k in shown}})
    return {"instance_types": describe_types(KubernetesCompute.model_validate(row.spec)), "pools": pools}


def describe_types(spec: KubernetesCompute) -> dict[str, dict[str, Any]]:
    """Every instance type, where it comes from, and what a pod of it gets."""
    own, cluster = spec.settings.instance_types, spec.cluster_instance_types or {}
    return {name: {"source": "cible.instance_types" if name in own else "cluster" if name in cluster else "default",
                   "resources": chosen.model_dump(mode="json", by_alias=True, exclude_none=True)["resources"],
                   **({"nodeSelector": chosen.node_selector} if chosen.node_selector else {})}
            for name, chosen in sorted(spec.instance_types().items())}


def upsert_pool(session: Session, name: str, spec: dict[str, Any], user: str | None, now: Any) -> None:
    """Make the pool a job runs on, or bring it up to its compute's settings (in the submit's transaction)."""
    row = session.get(ComputeRow, name)
    if row is None:
        session.add(ComputeRow(name=name, compute_type=POOL_TYPE, spec=spec, created_by=user,
                               provisioning_state="Succeeded", created_at=now, updated_at=now))
    elif row.spec != spec:  # the compute attached again with other settings: its next pods get them
        row.spec = spec
        row.updated_at = now


def refuse_if_draining(session: Session, name: str) -> None:
    """A pool still draining from its compute's detach takes no job (a job's submit says so)."""
    row = session.get(ComputeRow, name)
    if row is not None and row.provisioning_state == "Deleting":
        raise InvalidRequestError(f"compute: the pods of {name}, from before its compute was detached, are still "
                                  "going; submit again once `cible compute show` lists that pool no more",
                                  details={"field": "compute"})


def every_instance_type(session: Session) -> dict[str, InstanceType]:
    """Every attached cluster's instance types, as `<compute>/<type>` (what the provider's cannot_hold asks)."""
    found = {}
    for row in session.scalars(select(ComputeRow).where(ComputeRow.compute_type == "kubernetes")):
        try:
            spec = KubernetesCompute.model_validate(row.spec)
        except ValueError:  # one unreadable row is left out alone
            continue
        found.update({f"{row.name}/{name}": chosen for name, chosen in spec.instance_types().items()})
    return found


def check_deployment(session: Session, endpoint: str, compute: str | None, spec: dict[str, Any]) -> None:
    """A `type: kubernetes` deployment runs on the Kubernetes compute its endpoint names, and its
    `resources` fit its instance type's limits; an endpoint on a Kubernetes compute takes no managed one."""
    from cible.core.models.kubernetes import quantity
    from cible.core.specs.azureml.refs import parse_compute_ref

    row = session.get(ComputeRow, parse_compute_ref(compute)) if compute else None
    on_kubernetes = row is not None and row.compute_type == "kubernetes"
    if spec.get("type") != "kubernetes":
        if on_kubernetes:
            raise InvalidRequestError(f"type: endpoint {endpoint} runs on Kubernetes compute {row.name}: its "
                                      "deployments are type: kubernetes (instance_type names an instance type)",
                                      details={"field": "type"})
        return
    if not on_kubernetes:
        what = f"names compute '{compute}', which is {'a ' + row.compute_type if row else 'not a compute here'}" \
            if compute else "names no compute"
        raise InvalidRequestError(f"type: a kubernetes deployment runs on the Kubernetes compute its endpoint names "
                                  f"(compute: azureml:<name> in the endpoint's YAML); endpoint {endpoint} {what}",
                                  details={"field": "type"})
    k8s = KubernetesCompute.model_validate(row.spec)
    name = spec.get("instance_type") or DEFAULT_INSTANCE_TYPE
    chosen = k8s.instance_types().get(name)
    if chosen is None:  # the replica's submit says it, with the types there are
        return
    limits = chosen.resources.limits
    for kind in ("requests", "limits"):
        asked = (spec.get("resources") or {}).get(kind) or {}
        for key, most in (("cpu", limits.cpu), ("memory", limits.memory), ("gpu", limits.gpu)):
            value = asked.get(key)
            if value is not None and quantity(value) > quantity(most or 0):
                raise InvalidRequestError(
                    f"resources.{kind}.{'nvidia.com/gpu' if key == 'gpu' else key}: {value} is above instance type "
                    f"{name}'s limit ({most or 0}); ask for less or pick a larger instance_type",
                    details={"field": f"resources.{kind}"})
