"""Compute targets. `local` always exists; amlcompute clusters run jobs on nodes of a node
provider; instances and attached computes are registered and validated, and run jobs once
their backends exist."""

from __future__ import annotations

import dataclasses
import difflib
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cible.backends.base.contract import PREEMPT, NodeProvider, ProviderStatus, supports
from cible.core import catalog, naming
from cible.core.clock import Clock
from cible.core.errors import ConflictError, InvalidRequestError, NotFoundError
from cible.core.lifecycle.computes import ProvisioningState
from cible.core.lifecycle.nodes import LIVE, NodeState
from cible.core.models.computes import (
    AmlCompute,
    ComputeInstance,
    KubernetesCompute,
    SlurmCompute,
    SynapseSparkCompute,
    VirtualMachineCompute,
)
from cible.core.models.records import ComputeStatus, InstanceState
from cible.core.planning.clusters import ClusterConfig, admission_error
from cible.core.planning.costs import effective_price, estimate
from cible.core.planning.quotas import UNMETERED_FAMILY
from cible.core.planning.schedules import check_schedules
from cible.core.planning.spark import pool_cluster, pool_view, runtime_line
from cible.core.specs.azureml.loader import load_spec_dict
from cible.server.services import kubernetes
from cible.server.services.attach import attach_machine
from cible.server.services.compute_providers import ComputeProviders
from cible.server.services.compute_refs import check_hosts, check_slurm, refuse_if_a_cluster_uses, refuse_if_jobs_run_on
from cible.server.services.compute_spec import (
    OWN_MACHINES,
    attached_size,
    attached_spark,
    attached_spark_names,
    cluster_spec,
    compute_spec,
    provider_name,
)
from cible.server.services.costs import compute_cost
from cible.server.services.credentials import (
    CredentialService,
    attaching_credential,
    credential_row,
    no_credential_message,
    stored_credential,
)
from cible.server.services.instances import describe_instance, owner_of, require_instance_user
from cible.server.services.lifecycle import move_compute
from cible.server.services.nodes import gpu_readings, node_item, node_listing, node_query
from cible.server.services.paging import MAX_TOP, page
from cible.server.services.quotas import QuotaService
from cible.server.services.slurm_attach import attach_slurm
from cible.server.services.unreadable import fetch_items
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, CredentialRow, NodeRow
from cible.workspace import WorkspacePaths

log = logging.getLogger(__name__)
LOCAL = "local"
SIZED_TYPES = ("amlcompute", "computeinstance")
# Computes whose jobs run on nodes the cluster reconciler keeps: clusters, instances (one node),
# serverless pools (the nodes of one job, made at submit and gone after it; never listed), and
# attached machines (one node: the machine's agent, started over SSH by the ssh provider).
# Not Slurm clusters: Slurm queues and places their jobs itself (no node of cible's).
# (A synapsespark compute has nodes unless it is a Spark cible does not own: compute_spec.attached_spark.)
NODE_COMPUTE_TYPES = ("amlcompute", "computeinstance", "serverless", "virtualmachine", "synapsespark",
                      kubernetes.POOL_TYPE)
HIDDEN_TYPES = ("serverless", kubernetes.POOL_TYPE)  # made by the server for jobs: never listed
# What `cible compute update` may change on a cluster, applied live (as `az ml compute update`).
UPDATABLE = ("min_instances", "max_instances", "idle_time_before_scale_down", "description", "tags")
READ_ONLY = ("provisioning_state", "provisioning_errors", "created_on", "id", "allocation_state",
             "current_node_count", "target_node_count", "node_state_counts", "state", "provider_status", "warnings",
             "host_key", "host_key_fingerprint", "host_facts",  # an attached machine's: pinned by the server
             "partitions")  # a Slurm cluster's: as its sinfo lists them at attach
# Attached computes whose host key cible pins (replace-host-key); a slurm compute has one with a login host.
HOST_KEY_TYPES = ("virtualmachine", "slurm")


def local_compute(max_concurrent: int) -> dict[str, Any]:
    return {
        "name": LOCAL,
        "type": "local",
        "description": "this machine: jobs run as processes of the workspace server's host",
        "provisioning_state": ProvisioningState.SUCCEEDED.value,
        "state": "Running",
        "max_concurrent_jobs": max_concurrent,
    }


DELETING = ProvisioningState.DELETING.value  # a cluster draining before it goes
NODE_STATES = ("idle", "running", "preparing", "unusable", "leaving", "preempted")


class ComputeService:
    def __init__(self, store: Store, max_concurrent_local: int, clock: Clock,
                 providers: dict[str, NodeProvider] | None = None, on_change=lambda: None,  # noqa: ANN001
                 quotas: QuotaService | None = None, paths: WorkspacePaths | None = None,
                 default_provider: str = "local") -> None:
        self.store = store
        self.quotas = quotas or QuotaService(store, clock)
        self.paths = paths
        self.max_concurrent_local = max_concurrent_local
        self.clock = clock
        self.providers = providers or {}
        self.node_providers = ComputeProviders(self.providers, default_provider, clock, self.quotas)
        self.on_change = on_change  # wakes the cluster reconciler: settings apply at once
        self.credentials = CredentialService(store, clock)  # Slurm clusters' per-user logins

    # -- writes ------------------------------------------------------------
    def create(self, name: str, body: dict[str, Any], user: str | None = None) -> dict[str, Any]:
        naming.COMPUTE.check(name)  # an instance's name becomes its home folder
        if name == LOCAL:
            raise ConflictError("'local' is this machine's built-in compute; choose another name")
        if body.get("name") not in (None, name):
            raise InvalidRequestError(f"name: the body says '{body['name']}' but the URL says '{name}'",
                                      details={"field": "name"})
        data = {k: v for k, v in body.items() if k not in READ_ONLY}
        entity = load_spec_dict({**data, "name": name}, "compute", source="request body").entity
        notes: list[str] = []
        if entity.type in SIZED_TYPES:
            size = catalog.check_size(entity.size, entity.type, self.clock.now().date())
            entity = self.node_providers.settle(entity)
            with self.store.session() as session:
                check_hosts(session, entity)
                check_slurm(session, entity)
            self.node_providers.refuse_if_cannot_hold(entity)
            notes = self.node_providers.size_notes(entity.cible.provider, size.name)
            low = getattr(entity, "tier", "dedicated") == "low_priority"
            if entity.cible.provider in OWN_MACHINES:  # the user's own machines: no quota counts them
                size = dataclasses.replace(size, family=UNMETERED_FAMILY)
            count, what = ((entity.min_instances, f"compute cluster {name}: min_instances {entity.min_instances}")
                           if entity.type == "amlcompute" else (1, f"compute instance {name}"))
            self.quotas.refuse_if_never_fits(size, low_priority=low, count=count, what=what,
                                             field="min_instances" if entity.type == "amlcompute" else "size")
        if isinstance(entity, SynapseSparkCompute):
            entity, notes = self._spark_compute(entity)
        if isinstance(entity, VirtualMachineCompute):
            with self.store.session() as session:  # said before any connection is made
                self._refuse_existing(session, name)
            entity = attach_machine(entity)  # pins the host key, logs in, probes; raises before anything is stored
        if isinstance(entity, SlurmCompute):
            with self.store.session() as session:
                self._refuse_existing(session, name)
            entity = attach_slurm(entity)  # login host pinned, sinfo answers; raises before anything is stored
        if isinstance(entity, KubernetesCompute):
            with self.store.session() as session:
                self._refuse_existing(session, name)
            # Its API server answers, its namespace exists, its instance types read: before anything is stored.
            entity, notes = kubernetes.attach_kubernetes(entity, self.providers.get(kubernetes.PROVIDER))
        if entity.type == "computeinstance":
            problems = check_schedules(entity.schedules.compute_start_stop if entity.schedules else [])
            if problems:
                raise InvalidRequestError("; ".join(problems), details={"field": "schedules"})
        spec = entity.model_dump(mode="json", exclude_none=True)
        now = self.clock.now()
        with self.store.session() as session:
            self._refuse_existing(session, name)
            # Made at once (its nodes are the reconciler's to start); an instance is made powered on.
            observed = ComputeStatus(instance=InstanceState(powered_on_at=now) if entity.type == "computeinstance"
                                     else None)
            row = ComputeRow(name=name, compute_type=entity.type, spec=spec,
                             provisioning_state=ProvisioningState.SUCCEEDED.value,
                             created_at=now, updated_at=now, created_by=user, observed=observed)
            session.add(row)
            credential = attaching_credential(entity) if isinstance(entity, SlurmCompute) else None
            if credential is not None:  # the attaching user's jobs run as the login attach used
                session.flush()  # the compute before its credential (its foreign key)
                session.add(credential_row(name, user, credential, now))
            result = _resource(session, row, self.clock.now())
        for note in notes:  # once, here: not at each node start (`show` repeats it to whoever asks)
            log.warning("compute %s: %s", name, note)
        if notes:
            result["warnings"] = [*result.get("warnings", []), *notes]
        self.on_change()
        return result

    def _spark_compute(self, entity: SynapseSparkCompute) -> tuple[SynapseSparkCompute, list[str]]:
        """A Spark compute as stored: its Spark line checked; a pool of cible's nodes checked as a
        cluster's (compute_providers), an attached master left as given."""
        try:
            runtime_line(entity.spark_version)
        except ValueError as exc:
            raise InvalidRequestError(str(exc).replace("resources.runtime_version", "spark_version"),
                                      details={"field": "spark_version"}) from None
        if entity.master_url:
            return entity, []
        return self.node_providers.spark_pool(entity)

    @staticmethod
    def _refuse_existing(session: Session, name: str) -> None:
        existing = session.get(ComputeRow, name)
        if existing is not None:
            again = ("; a new host key is pinned with `cible compute attach --replace-host-key`"
                     if existing.compute_type in HOST_KEY_TYPES else "")
            raise ConflictError(
                f"compute '{name}' already exists ({existing.compute_type}); change a cluster's scale settings "
                f"with `cible compute update`, or delete it first{again}", details={"name": name})

    def replace_host_key(self, name: str, expected_fingerprint: str | None = None) -> dict[str, Any]:
        """Pin the key an attached machine offers now, in place of the one pinned before: the one
        way to accept a host's new key (after a reinstall), asked for on purpose, never automatic."""
        with self.store.session() as session:
            row = self._row(session, name)
            if row.compute_type not in HOST_KEY_TYPES:
                raise InvalidRequestError(f"compute '{name}' is of type {row.compute_type}; only an attached machine "
                                          "(virtualmachine) or a Slurm cluster's login host has a host key",
                                          details={"field": "type"})
            vm = compute_spec(row)
        if isinstance(vm, SlurmCompute) and vm.login is None:
            raise InvalidRequestError(f"compute '{name}' uses this machine's Slurm commands: it has no login host, "
                                      "hence no host key", details={"field": "login"})
        previous = vm.host_key_fingerprint
        vm = (attach_slurm(vm, expected_fingerprint=expected_fingerprint) if isinstance(vm, SlurmCompute)
              else attach_machine(vm, expected_fingerprint=expected_fingerprint))

        def store(session: Session) -> dict[str, Any]:
            row = self._row(session, name)
            row.spec = vm.model_dump(mode="json", exclude_none=True)
            row.updated_at = self.clock.now()
            return _resource(session, row, self.clock.now())

        result = self.store.transact(store)
        log.warning("compute %s: host key replaced: %s -> %s", name, previous, vm.host_key_fingerprint)
        self.on_change()  # the node waiting on the old key is started with the new one at once
        return {**result, "previous_host_key_fingerprint": previous}

    def update(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        if name == LOCAL:
            raise InvalidRequestError("'local' is this machine's built-in compute; it has no scale settings to update")
        unknown = sorted(set(changes) - set(UPDATABLE))
        if unknown:
            raise InvalidRequestError(f"{', '.join(unknown)}: cannot be updated; a cluster can change "
                                      f"{', '.join(UPDATABLE)}", details={"fields": unknown})

        def change(session: Session) -> dict[str, Any]:  # run again from a fresh read if the reconciler wrote the row
            row = self._row(session, name)
            if row.compute_type != "amlcompute":
                raise InvalidRequestError(f"compute '{name}' is of type {row.compute_type}; only amlcompute clusters "
                                          "can be updated", details={"field": "type"})
            if row.provisioning_state == DELETING:
                raise ConflictError(f"compute cluster '{name}' is being deleted; it cannot be updated")
            merged = {**row.spec, **changes}
            entity = load_spec_dict(merged, "compute", source="update").entity  # min <= max, ranges
            if "min_instances" in changes:
                self.quotas.refuse_if_never_fits(
                    catalog.get_size(entity.size), low_priority=entity.tier == "low_priority",
                    count=entity.min_instances, what=f"compute cluster {name}: min_instances {entity.min_instances}",
                    field="min_instances")
            row.spec = entity.model_dump(mode="json", exclude_none=True)
            row.updated_at = self.clock.now()
            return _resource(session, row, self.clock.now())

        result = self.store.transact(change)
        self.on_change()
        return result

    def delete(self, name: str, by: str | None = None) -> dict[str, Any] | None:
        """Delete a compute. A cluster with nodes drains first: it takes no new jobs, its running
        jobs finish, its nodes leave, then it goes (returned: the cluster, Deleting)."""
        if name == LOCAL:
            raise ConflictError("'local' is this machine's built-in compute and cannot be deleted")

        def delete_or_drain(session: Session) -> tuple[str, dict[str, Any] | None]:
            row = self._row(session, name)
            if row.compute_type == "virtualmachine":
                refuse_if_a_cluster_uses(session, name)
            if row.compute_type == "slurm":
                refuse_if_a_cluster_uses(session, name)
                refuse_if_jobs_run_on(session, name)
                session.execute(CredentialRow.__table__.delete().where(CredentialRow.compute == name))
            if row.compute_type == "kubernetes":  # its pools drain (their pods go), then go themselves
                pools = kubernetes.pools_of(session, name)
                refuse_if_jobs_run_on(session, name, *[pool.name for pool in pools])
                for pool in pools:
                    if _live_nodes(session, pool.name):
                        move_compute(session, pool, ProvisioningState.DELETING, f"compute {name} was detached",
                                     self.clock.now(), by=by)
                    else:
                        session.delete(pool)
            if row.compute_type not in NODE_COMPUTE_TYPES or not _live_nodes(session, name):
                session.delete(row)
                return row.compute_type, None
            move_compute(session, row, ProvisioningState.DELETING, "deleted: its nodes drain first", self.clock.now(),
                         by=by)
            return row.compute_type, _resource(session, row, self.clock.now())

        kind, draining = self.store.transact(delete_or_drain)
        if draining is None:
            self._forget(name, kind)  # after commit: a delete that lost a race removes no files
            return None
        self.on_change()
        return draining

    def _forget(self, name: str, kind: str) -> None:
        """What a deleted compute leaves behind: an instance's home folder."""
        if kind == "computeinstance" and self.paths is not None:
            self.paths.remove_instance_home(name)

    def cost_estimate(self, target: str | dict[str, Any], nodes: int, timeout_s: float | None) -> dict[str, Any] | None:
        """A job's cost estimate at submit, from its compute's (or serverless pool's) size; None on local
        and on computes without a size."""
        if isinstance(target, dict) and target.get("kind") == kubernetes.POOL_TYPE:
            return None  # pods of the user's own cluster: no price of cible's
        if isinstance(target, dict):  # a serverless pool, as serverless_pool made it
            size, low = target["size"], target["tier"] == "low_priority"
        elif target == LOCAL:
            return None
        else:
            with self.store.session() as session:
                row = self._row(session, target)
                if row.compute_type not in SIZED_TYPES and row.compute_type != "serverless":
                    return None  # attached computes: the user's own machines, no price of cible's
                spec = compute_spec(row)
            size, low = spec.size, isinstance(spec, AmlCompute) and spec.tier == "low_priority"
        return estimate(effective_price(catalog.get_size(size).price_per_hour, low), nodes, timeout_s)

    def preempt(self, name: str, node_id: str) -> dict[str, Any]:
        """Take a node of a low-priority cluster away at once, as Azure evicts a low-priority VM."""
        with self.store.session() as session:
            row = self._row(session, name)
            if row.compute_type != "amlcompute" or cluster_spec(row).tier != "low_priority":
                raise InvalidRequestError(f"compute '{name}' is not a low-priority cluster (tier: low_priority); "
                                          "only its nodes can be preempted", details={"field": "tier"})
            node = session.get(NodeRow, node_id)
            if node is None or node.compute != name or node.state not in {s.value for s in LIVE}:
                nodes = [n["node_id"] for n in node_listing(session, name) if n["node_state"] in {s.value for s in LIVE}]
                raise NotFoundError(f"node '{node_id}' is not a live node of compute '{name}' (live nodes: "
                                    f"{', '.join(nodes) or 'none'})", details={"node_id": node_id})
            provider = node.provider
        if not supports(self.providers.get(provider), PREEMPT):
            raise InvalidRequestError(f"compute '{name}': its node provider ({provider}) cannot preempt nodes",
                                      details={"field": "provider"})
        self.providers[provider].preempt(node_id)
        self.on_change()
        return {"node_id": node_id, "compute": name, "preempted": True}

    # -- reads ---------------------------------------------------------------
    def list(self, *, skip: int = 0, top: int = MAX_TOP) -> dict[str, Any]:
        """A page of the computes: `local` (no row) first, then the rows by name."""
        first = [local_compute(self.max_concurrent_local)] if skip == 0 else []
        query = select(ComputeRow).where(ComputeRow.compute_type.not_in(HIDDEN_TYPES)).order_by(ComputeRow.name)
        with self.store.session() as session:
            now = self.clock.now()
            # A compute whose stored status cannot be read is listed as a stub with an `error` (unreadable.py).
            items, total = fetch_items(session, query, max(skip - 1, 0), top - len(first),
                                       lambda r: _resource(session, r, now))
            return page([*first, *items], total + 1, skip)

    def get(self, name: str, *, with_cost: bool = True) -> dict[str, Any]:
        """A compute as `show` gives it; the service's own checks skip the cost (it reads every node's
        history) since they run on every job submit and queued-job read."""
        if name == LOCAL:
            return local_compute(self.max_concurrent_local)
        with self.store.session() as session:
            row = self._row(session, name)
            resource = _resource(session, row, self.clock.now(), with_cost=with_cost)
            spec = compute_spec(row) if row.compute_type in NODE_COMPUTE_TYPES and not attached_spark(row) else None
            if with_cost and spec is not None and (readings := gpu_readings(session, compute=name)):
                resource["gpu_usage"] = readings  # `show`: its nodes' GPUs at work
        if with_cost and (spec is not None or resource["type"] == "kubernetes"):  # `show`: is its engine there?
            provider_key = provider_name(spec) if spec is not None else kubernetes.PROVIDER
            provider = self.providers.get(provider_key)
            status = provider.status() if provider else ProviderStatus(
                name=provider_key, available=False, reachable=False, error="unknown to this server")
            resource["provider_status"] = status.model_dump(mode="json")
            notes = self.node_providers.size_notes(provider_key, spec.size) if row.compute_type in SIZED_TYPES and spec else []
            if notes:
                resource["warnings"] = [*resource.get("warnings", []), *notes]
        return resource

    def nodes(self, name: str, *, skip: int = 0, top: int = MAX_TOP) -> dict[str, Any]:
        """`list-nodes`: a cluster's nodes that are not gone."""
        compute = self.get(name, with_cost=False)
        if compute["type"] not in (*NODE_COMPUTE_TYPES, "kubernetes"):
            raise InvalidRequestError(f"compute '{name}' is of type {compute['type']}; it has no nodes")
        # A Kubernetes compute's nodes are its pools' pods, every instance type's.
        names = [pool["name"] for pool in compute.get("pools", [])] if compute["type"] == "kubernetes" else [name]
        with self.store.session() as session:
            items, total = fetch_items(session, node_query(*names), skip, top, node_item)  # unreadable: a stub
            return page(items, total, skip)

    def cluster_names(self) -> set[str]:
        with self.store.session() as session:
            names = set(session.scalars(select(ComputeRow.name).where(ComputeRow.compute_type.in_(NODE_COMPUTE_TYPES))))
            return names - attached_spark_names(session)

    def require_runnable(self, name: str, *, instance_count: int = 1, user: str | None = None,
                         as_admin: bool = True) -> catalog.VmSize | None:
        """Raise unless a job of `instance_count` nodes can run on compute `name`: it exists, can run
        jobs, and the job could ever fit (refused at submit, not left waiting forever). Returns the size
        of the nodes it runs on (None on local and Slurm, whose machines have no catalog size). `user`
        submits it: on a Slurm cluster with a login host the job runs as their own Slurm identity, so
        they need a credential there; a compute instance is its assigned user's (`as_admin`: anyone's)."""
        if name == LOCAL:
            return None
        with self.store.session() as session:
            row = self._row(session, name)
            kind, deleting, created_by = row.compute_type, row.provisioning_state == DELETING, row.created_by
            spec = compute_spec(row) if kind in (*SIZED_TYPES, "virtualmachine", "slurm", "synapsespark") else None
            if isinstance(spec, SynapseSparkCompute):
                if spec.master_url:  # the driver runs here, on local's slots; the Spark master has the executors
                    return None
                spec = pool_cluster(spec)
            if isinstance(spec, SlurmCompute):  # Slurm sizes and queues the job; any node count is its to judge
                if spec.login is not None and stored_credential(session, name, user) is None:
                    raise InvalidRequestError(no_credential_message(name, user), details={"field": "compute"})
                return None
        if kind == "serverless":
            raise InvalidRequestError(f"compute '{name}' holds the nodes of another serverless job; use "
                                      "compute: serverless for nodes of the job's own", details={"field": "compute"})
        if spec is None:
            raise InvalidRequestError(
                f"compute '{name}' is of type {kind}, which cible cannot run jobs on yet; "
                "use compute: local, an amlcompute cluster, a compute instance or an attached machine",
                details={"field": "compute"},
            )
        if isinstance(spec, ComputeInstance) and not as_admin:
            require_instance_user(name, owner_of(spec, created_by), user)
        if isinstance(spec, VirtualMachineCompute) and instance_count > 1:
            raise InvalidRequestError(
                f"compute '{name}' is one attached machine but the job needs {instance_count} nodes "
                "(resources.instance_count); run it on a cluster of attached machines (type: amlcompute with "
                "cible: {provider: ssh, hosts: [...]})", details={"field": "resources.instance_count"})
        size = attached_size(spec) if isinstance(spec, VirtualMachineCompute) else catalog.get_size(spec.size)
        max_instances = spec.max_instances if isinstance(spec, AmlCompute) else 1
        config = ClusterConfig(name=name, max_instances=max_instances, deleting=deleting)
        # No GPU check here: Azure runs a CUDA image on any size (on its CPUs where the VM has none).
        reason = admission_error(config, instance_count)
        if reason:
            field = "resources.instance_count" if "instance_count" in reason else "compute"
            raise InvalidRequestError(reason, details={"field": field})
        return size

    def require_instance_user(self, name: str, user: str | None) -> None:
        """Refuse `user` compute `name` when it is an instance assigned to someone else (nothing for any other
        compute, or for a name no compute has: the submit's other checks say that)."""
        with self.store.session() as session:
            row = session.get(ComputeRow, name)
            if row is None or row.compute_type != "computeinstance":
                return
            spec, created_by = compute_spec(row), row.created_by
        require_instance_user(name, owner_of(spec, created_by), user)

    def _row(self, session, name: str) -> ComputeRow:  # noqa: ANN001
        row = session.get(ComputeRow, name)
        if row is None:
            # The computes `compute list` shows (not the serverless pools the server makes for jobs and endpoints).
            names = [LOCAL, *session.scalars(select(ComputeRow.name).where(
                ComputeRow.compute_type.not_in(HIDDEN_TYPES)).order_by(ComputeRow.name))]
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise NotFoundError(
                f"compute '{name}' does not exist in this workspace{hint} (computes: {', '.join(names)}); "
                "create it first, as on Azure, or set compute: local", details={"name": name})
        return row


def _live_nodes(session, name: str) -> int:  # noqa: ANN001
    return len(session.scalars(select(NodeRow.node_id).where(
        NodeRow.compute == name, NodeRow.state != NodeState.REMOVED.value)).all())


def _resource(session, row: ComputeRow, now: datetime, with_cost: bool = True) -> dict[str, Any]:  # noqa: ANN001
    observed = row.observed
    resource = {**row.spec, **_observed_fields(observed), "name": row.name, "type": row.compute_type,
                "provisioning_state": row.provisioning_state, "created_on": row.created_at.isoformat(),
                "created_by": row.created_by}
    if row.compute_type in NODE_COMPUTE_TYPES and not attached_spark(row):
        counts = dict.fromkeys(NODE_STATES, 0)
        for state in session.scalars(select(NodeRow.state).where(NodeRow.compute == row.name)):
            if state in counts:
                counts[state] += 1
        current = sum(counts[s.value] for s in LIVE)
        target = observed.target_node_count if observed.target_node_count is not None else current
        resource.update(allocation_state="Steady" if current == target else "Resizing", current_node_count=current,
                        target_node_count=target, node_state_counts=counts)
        if observed.quota_wait:
            resource["quota_wait"] = observed.quota_wait
        if with_cost:
            resource["cost"] = compute_cost(session, row.name, now)
    if row.compute_type == "computeinstance":
        describe_instance(session, row, resource, now)
    if row.compute_type == "synapsespark" and not attached_spark(row):  # the cluster cible makes of the pool
        resource["pool"] = pool_view(compute_spec(row))
    if row.compute_type == "kubernetes":  # its instance types, and the pods of each at work
        resource.update(kubernetes.describe(session, row, lambda pool: _resource(session, pool, now, with_cost=False)))
    return resource


def _observed_fields(observed: ComputeStatus) -> dict[str, Any]:
    """Azure's read-only fields that the reconciler sets, as `show` has always given them: both
    once a pass has sized the compute (provisioning_errors null while its nodes start fine)."""
    if observed.target_node_count is None and observed.provisioning_errors is None:
        return {}
    errors = [e.model_dump() for e in observed.provisioning_errors] if observed.provisioning_errors else None
    return {"target_node_count": observed.target_node_count, "provisioning_errors": errors}
