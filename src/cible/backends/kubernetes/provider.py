"""The `kubernetes` node provider: each cible node is a pod on an attached Kubernetes cluster.

A kubernetes compute's jobs run on pools, one per instance type (`<compute>:<type>`, rows the
server makes as jobs name them); each pool is a cluster to the cluster reconciler, whose nodes
this provider makes as pods of that instance type (requests, limits, node selector). A pod's
agent pulls work like any node's; its files travel over HTTP (no SHARES_WORKSPACE).

- launch: a record `<nodes_root>/<node>/kubernetes.json` (the pool, cluster and pod) is written
  first, so launch is idempotent and a restarted server finds its pods; then the token's Secret and
  the Pod are created, in a worker thread (an API server that does not answer holds no pass).
- A watcher thread lists each (cluster, namespace) with nodes once a second by the workspace's
  label; `list_nodes` answers from that view and is None until every such cluster was asked.
  A pod Pending or Running is alive (its IP is the node's address once it runs); one that ended,
  was evicted or deleted is not listed, with why in `poll_errors`: the node is lost and its job
  requeued or failed by the compute's policy.
- A pod that cannot be scheduled (FailedScheduling) or pulled stays a starting node; why is in
  `status().waiting` for its pool, which the queued jobs' reasons say. An API server that does not
  answer keeps the last view (the heartbeat timeout decides) and is said there too.
- terminate deletes the pod and its Secret (a pod already gone is fine) and then the record.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from cible.backends.base.contract import (
    CLOSE,
    ON_NODE_GONE,
    POLL_ERRORS,
    PREEMPT,
    PREPARE,
    NodeRequest,
    ProviderBase,
    ProviderNode,
    ProviderStatus,
)
from cible.backends.kubernetes import api
from cible.backends.kubernetes.api import ClusterAccess, PodTemplate
from cible.backends.kubernetes.pods import (
    NODE_ANNOTATION,
    WORKSPACE_LABEL,
    pod_manifest,
    pod_name,
    pod_state,
    secret_manifest,
    secret_name,
)
from cible.core.models.kubernetes import InstanceType
from cible.core.safepaths import under
from cible.runfiles import write_json_atomic

log = logging.getLogger(__name__)
RECORD = "kubernetes.json"
POLL_S = 1.0


class KubernetesNodeProvider(ProviderBase):
    name = "kubernetes"
    capabilities = frozenset({PREPARE, CLOSE, PREEMPT, POLL_ERRORS, ON_NODE_GONE})

    def __init__(self, nodes_root: Path, url: str | None, node_token: Callable[[str], str],
                 template_of: Callable[[str], PodTemplate], workspace: str,
                 instance_types: Callable[[], dict[str, InstanceType]] = dict) -> None:
        self.nodes_root = nodes_root
        self.url = url
        self.node_token = node_token
        self.template_of = template_of  # a pool's name -> its pods' template (read from the store)
        self.workspace = workspace  # the label value that marks this workspace's pods
        self.instance_types = instance_types  # every attached cluster's, as "<compute>/<type>" -> its spec
        self._preempted: set[str] = set()  # evicted by preempt(): listed as preempted until terminated
        self._lock = threading.Lock()
        self._errors: dict[str, str] = {}  # node id -> why it failed or was lost
        self._seen: dict[str, dict[str, Any]] = {}  # node id -> its pod as last listed
        self._asked: set[tuple[str, str, str]] = set()  # clusters listed since the start
        self._unreachable: dict[tuple[str, str, str], str] = {}  # cluster -> why it could not be listed
        self._starting: set[str] = set()
        self._workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cible-k8s")
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def prepare(self) -> None:
        if self._watcher is None or not self._watcher.is_alive():
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, name="cible-k8s-watch", daemon=True)
            self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        self._workers.shutdown(wait=False, cancel_futures=True)

    # -- the contract -----------------------------------------------------------------------------
    def status(self) -> ProviderStatus:
        with self._lock:
            down = dict(self._unreachable)
            waiting = self._waiting()
        error = "; ".join(sorted(set(down.values()))) or None
        return ProviderStatus(name=self.name, available=True, reachable=not down, error=error,
                              hint="attach a cluster: cible compute attach --type kubernetes --name k8s --kubeconfig "
                                   "FILE --namespace NS", waiting=waiting or None)

    def cannot_hold(self, size: str, vcpus: int, memory_gb: float, gpus: int, overcommit: bool) -> str | None:
        """A node is a pod of an instance type: a size no instance type of an attached cluster holds
        (its limits: CPUs, memory unless overcommitted, GPUs) cannot be had here."""
        types = self.instance_types()
        if not types:
            return "no Kubernetes cluster is attached (cible compute attach --type kubernetes …)"
        if any(t.vcpus >= vcpus and t.gpus >= gpus and (overcommit or t.memory_gb >= memory_gb * 0.95)
               for t in types.values()):
            return None
        return (f"no instance type of an attached Kubernetes cluster holds {size} ({vcpus} CPUs, {memory_gb:g} GB, "
                f"{gpus} GPU): " + ", ".join(f"{name} has {t.describe()}" for name, t in sorted(types.items())))

    def launch(self, requests: list[NodeRequest]) -> None:
        for request in requests:
            root = under(self.nodes_root, request.node_id, field="node_id")
            if (root / RECORD).exists():
                continue  # launched already: launch is idempotent by node id
            template = self.template_of(request.compute)  # raises for a pool gone: that node's launch fails
            record = {"pool": request.compute, "compute": template.access.compute,
                      "namespace": template.access.namespace, "kubeconfig": template.access.kubeconfig,
                      "context": template.access.context, "pod": pod_name(request.node_id),
                      "secret": secret_name(request.node_id)}
            root.mkdir(parents=True, exist_ok=True)
            write_json_atomic(root / RECORD, record)
            with self._lock:
                self._starting.add(request.node_id)
            self._workers.submit(self._create, request, template, root)
        self.prepare()

    def terminate(self, node_ids: list[str]) -> None:
        for node_id in node_ids:
            self._workers.submit(self._delete, node_id, None)

    def preempt(self, node_id: str) -> None:
        """Delete the node's pod at once, as an eviction takes it (the drill's); the node is listed as
        preempted until it is terminated."""
        with self._lock:
            self._preempted.add(node_id)
        self._workers.submit(self._delete, node_id, None, True)

    def list_nodes(self) -> dict[str, ProviderNode] | None:
        self.prepare()
        records = self._records()
        with self._lock:
            if any(_access(r).key not in self._asked for n, r in records.items() if n not in self._starting):
                return None  # a cluster not listed yet since the start: cannot tell
            nodes = {}
            for node_id in records:
                if node_id in self._preempted:
                    nodes[node_id] = ProviderNode(node_id, alive=False, preempted=True)
                    continue
                pod = self._seen.get(node_id)
                if pod is None and node_id not in self._starting:
                    continue  # gone: the reconciler sees the node lost (poll_errors says why)
                address = (pod or {}).get("status", {}).get("podIP") if pod else None
                nodes[node_id] = ProviderNode(node_id, alive=True, address=address)
            return nodes

    def poll_errors(self) -> dict[str, str]:
        with self._lock:
            errors, self._errors = self._errors, {}
        return errors

    # -- in the workers ---------------------------------------------------------------------------
    def _create(self, request: NodeRequest, template: PodTemplate, root: Path) -> None:
        access = template.access
        try:
            core = api.core(access)
            server_url = template.server_url or self.url or ""
            secret = secret_manifest(self.workspace, template, request, self.node_token(request.node_id))
            _create_or_keep(lambda: core.create_namespaced_secret(access.namespace, secret, _request_timeout=api.TIMEOUT))
            pod = pod_manifest(self.workspace, template, request, server_url)
            _create_or_keep(lambda: core.create_namespaced_pod(access.namespace, pod, _request_timeout=api.TIMEOUT))
            log.info("node %s of %s: pod %s/%s created on %s", request.node_id, request.compute, access.namespace,
                     pod["metadata"]["name"], api.server_of(access))
            with self._lock:
                self._seen[request.node_id] = pod  # Pending until listed otherwise
        except Exception as exc:  # noqa: BLE001  (one node's failure is its own: poll_errors says it)
            why = api.failure(exc, access, f"creating pod {pod_name(request.node_id)} in namespace "
                                           f"{access.namespace}").message
            log.warning("node %s: %s", request.node_id, why)
            self._remove_quietly(access, request.node_id)
            _forget(root)
            with self._lock:
                self._errors[request.node_id] = why
            self.on_node_gone()
        finally:
            with self._lock:
                self._starting.discard(request.node_id)

    def _delete(self, node_id: str, why: str | None, keep_record: bool = False) -> None:
        """Delete the node's pod and Secret; then its record, unless kept (a preempted node stays
        listed as such until terminated)."""
        root = under(self.nodes_root, node_id, field="node_id")
        record = _read(root)
        if record is None:
            with self._lock:
                self._preempted.discard(node_id)
            return
        access = _access(record)
        try:
            core = api.core(access)
            _delete_or_gone(lambda: core.delete_namespaced_pod(record["pod"], access.namespace, grace_period_seconds=10,
                                                               _request_timeout=api.TIMEOUT))
            _delete_or_gone(lambda: core.delete_namespaced_secret(record["secret"], access.namespace,
                                                                  _request_timeout=api.TIMEOUT))
        except Exception as exc:  # noqa: BLE001  (tried again: the record stays, the next terminate asks again)
            log.warning("node %s: %s", node_id, api.failure(exc, access, f"deleting pod {record['pod']}").message)
            return
        with self._lock:
            self._seen.pop(node_id, None)
            if why:
                self._errors[node_id] = why
            if not keep_record:
                self._preempted.discard(node_id)
                _forget(root)
        self.on_node_gone()

    def _remove_quietly(self, access: ClusterAccess, node_id: str) -> None:
        try:
            core = api.core(access)
            _delete_or_gone(lambda: core.delete_namespaced_secret(secret_name(node_id), access.namespace,
                                                                  _request_timeout=api.TIMEOUT))
        except Exception:  # noqa: BLE001  (a Secret left behind keeps its labels: kubectl delete secret -l …)
            log.debug("node %s: its secret could not be removed", node_id, exc_info=True)

    # -- the watcher ------------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self._pass()
            except Exception:  # one bad pass never ends the watch
                log.exception("the kubernetes provider's pass failed; tried again")
            self._stop.wait(POLL_S)

    def _pass(self) -> None:
        by_cluster: dict[tuple[str, str, str], tuple[ClusterAccess, dict[str, dict[str, Any]]]] = {}
        for node_id, record in self._records().items():
            access = _access(record)
            by_cluster.setdefault(access.key, (access, {}))[1][node_id] = record
        for key, (access, nodes) in by_cluster.items():
            with self._lock:
                starting = set(self._starting)  # a pod created while the list is read is not in it
            try:
                listed = api.core(access).list_namespaced_pod(access.namespace, label_selector=(
                    f"{WORKSPACE_LABEL}={self.workspace}"), _request_timeout=api.TIMEOUT)
                pods = {(p.get("metadata") or {}).get("name"): p for p in
                        api.api_client(access).sanitize_for_serialization(listed.items)
                        if ((p.get("metadata") or {}).get("labels") or {}).get(WORKSPACE_LABEL) == self.workspace}
            except Exception as exc:  # noqa: BLE001  (said in status; the last view stands)
                why = api.failure(exc, access, "listing the node pods").message
                with self._lock:
                    if self._unreachable.get(key) != why:
                        log.warning("compute %s: %s", access.compute, why)
                    self._unreachable[key] = why
                    self._asked.add(key)
                continue
            with self._lock:
                self._unreachable.pop(key, None)
                self._asked.add(key)
                for node_id, record in nodes.items():
                    if node_id not in starting and node_id not in self._starting and node_id not in self._preempted:
                        self._observe(node_id, record, pods.get(record["pod"]))
            self._delete_orphans(access, pods, {r["pod"] for r in self._records().values()} | {
                pod_name(n) for n in starting})

    def _delete_orphans(self, access: ClusterAccess, pods: dict[str, dict[str, Any]], known: set[str]) -> None:
        """Pods of this workspace that no node record names (a create that timed out yet happened, a record
        lost with its folder): deleted with their Secret, so nothing of cible's runs there unwatched. A
        record is written before its pod is created, so a pod without one is no node of cible's any more."""
        for name, pod in pods.items():
            if name in known:
                continue
            node_id = ((pod.get("metadata") or {}).get("annotations") or {}).get(NODE_ANNOTATION, "")
            log.warning("pod %s/%s is this workspace's but no node's: deleted", access.namespace, name)
            try:
                core = api.core(access)
                _delete_or_gone(partial(core.delete_namespaced_pod, name, access.namespace, grace_period_seconds=10,
                                        _request_timeout=api.TIMEOUT))
                if node_id:
                    _delete_or_gone(partial(core.delete_namespaced_secret, secret_name(node_id), access.namespace,
                                            _request_timeout=api.TIMEOUT))
            except Exception as exc:  # noqa: BLE001  (tried again on the next pass)
                log.warning("pod %s: %s", name, api.failure(exc, access, f"deleting pod {name}").message)

    def _observe(self, node_id: str, record: dict[str, Any], pod: dict[str, Any] | None) -> None:
        """Fold one node's pod as listed into the view (under the lock). A pod gone or ended makes the
        node lost, with why; its pod, Secret and record are removed."""
        where = f"{record['namespace']}/{record['pod']}"
        if pod is None or (pod.get("metadata") or {}).get("annotations", {}).get(NODE_ANNOTATION, node_id) != node_id:
            gone = f"its pod {where} was deleted" if node_id in self._seen else f"its pod {where} is not on the cluster"
        else:
            phase, why = pod_state(pod)
            if phase not in ("Succeeded", "Failed"):
                self._seen[node_id] = pod
                return
            gone = f"its pod {where} ended ({phase}" + (f": {why})" if why else ")")
        was_seen = self._seen.pop(node_id, None) is not None
        if was_seen or node_id not in self._errors:
            self._errors.setdefault(node_id, gone)
            log.warning("node %s: %s", node_id, gone)
        self._workers.submit(self._delete, node_id, None)

    def _waiting(self) -> dict[str, str]:
        """Pool -> why its next node's pod waits (unschedulable, its image), and pools whose cluster does
        not answer (under the lock)."""
        waiting: dict[str, str] = {}
        records = self._records()
        for node_id, pod in self._seen.items():
            phase, why = pod_state(pod)
            record = records.get(node_id)
            if record is not None and phase == "Pending" and why:
                waiting.setdefault(record["pool"], f"pod {record['pod']} is Pending: {why}")
        for record in records.values():
            down = self._unreachable.get(_access(record).key)
            if down:
                waiting.setdefault(record["pool"], down)
        return waiting

    # -- records ----------------------------------------------------------------------------------
    def _records(self) -> dict[str, dict[str, Any]]:
        found = {}
        for path in self.nodes_root.glob(f"*/{RECORD}") if self.nodes_root.is_dir() else []:
            record = _read(path.parent)
            if record is not None:
                found[path.parent.name] = record
        return found


def _access(record: dict[str, Any]) -> ClusterAccess:
    return ClusterAccess(compute=record["compute"], namespace=record["namespace"],
                         kubeconfig=record.get("kubeconfig"), context=record.get("context"))


def _read(root: Path) -> dict[str, Any] | None:
    """A node's record, or None (none, or one this release cannot read: that node alone is left out)."""
    try:
        record = json.loads((root / RECORD).read_text())
    except (OSError, ValueError):
        return None
    needed = ("pool", "compute", "namespace", "pod", "secret")
    return record if isinstance(record, dict) and all(isinstance(record.get(k), str) for k in needed) else None


def _forget(root: Path) -> None:
    (root / RECORD).unlink(missing_ok=True)
    try:
        root.rmdir()
    except OSError:
        pass


def _create_or_keep(create: Callable[[], Any]) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        create()
    except ApiException as exc:
        if exc.status != 409:  # made by an earlier try of the same launch: kept
            raise


def _delete_or_gone(delete: Callable[[], Any]) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        delete()
    except ApiException as exc:
        if exc.status != 404:
            raise
