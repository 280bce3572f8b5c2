"""The kubelet and scheduler of the emulated Kubernetes (cible.testing.kubernetes): NOT a real kubelet.

A thread that looks at the emulated API server's pods every 0.1 s and plays both parts for them:
the scheduler (a pending pod is bound to an `EmulatedNode` whose labels match its nodeSelector and
whose free capacity fits its requests, or marked Unschedulable with the scheduler's wording) and the
kubelet (each container runs as a local process of this machine's user, in a session of its own, on a
loopback "pod IP" of its own; exits, deletions and evictions are written to the pod's status). There
are no images, cgroups, mount or network namespaces: `python`/`python3` is the harness's interpreter,
volumes are folders, a container's cwd is its volume's folder when its workingDir is a mount path.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import signal
import subprocess
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

GPU = "nvidia.com/gpu"
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "n": Decimal("1e-9"),
             "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
             "P": 10**15, "E": 10**18}


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("500m", "2", 2, "256Mi", "1G", "1e3") as a number (cores, bytes, units)."""
    if isinstance(value, (int, float, Decimal)):
        return Decimal(str(value))
    found = re.fullmatch(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)", str(value).strip())
    if not found:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return Decimal(found.group(1)) * Decimal(_SUFFIXES[found.group(2)])


@dataclass(frozen=True)
class EmulatedNode:
    """A node of the emulated cluster: its capacity and labels (the processes all run on this machine)."""

    name: str
    cpu: str = "4"
    memory: str = "8Gi"
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)  # other capacity, e.g. {"ephemeral-storage": "50Gi"}

    def all_labels(self) -> dict[str, str]:
        return {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", **self.labels}

    def _capacity(self) -> dict[str, str]:
        return {"cpu": str(self.cpu), "memory": str(self.memory), GPU: str(self.gpus), "pods": "110",
                "ephemeral-storage": "100Gi", **{key: str(value) for key, value in self.resources.items()}}

    def capacity(self) -> dict[str, Decimal]:
        return {key: quantity(value) for key, value in self._capacity().items()}

    def manifest(self) -> dict[str, Any]:
        """The Node object the API serves (`kubectl get node`)."""
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": self.all_labels()},
                "spec": {}, "status": {"capacity": self._capacity(), "allocatable": self._capacity(),
                                       "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                                     {"type": "Hostname", "address": self.name}],
                                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def pod_requests(spec: dict[str, Any]) -> dict[str, Decimal]:
    """What a pod asks the scheduler for: its containers' requests summed (a request defaults to its limit, as
    the API server defaults it; GPUs are limits) and one of the node's `pods` (init containers are not counted)."""
    total: Counter = Counter({"pods": Decimal(1)})
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        total.update({key: quantity(value) for key, value in merged.items()})
    return dict(total)


def node_matches(node: EmulatedNode, spec: dict[str, Any]) -> bool:
    """spec.nodeSelector: every label equal (node affinity and taints are not emulated)."""
    labels = node.all_labels()
    return all(labels.get(key) == str(value) for key, value in (spec.get("nodeSelector") or {}).items())


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: a defined VAR is replaced, an unknown one kept; `$$` is one `$`."""
    return re.sub(r"\$\$|\$\(([^)]*)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


class ClusterState(Protocol):
    """What the kubelet needs of the emulated API server (in-memory; what it writes, API clients see)."""

    def pods(self) -> list[dict[str, Any]]: ...
    def patch_pod(self, namespace: str, name: str, uid: str, patch: dict[str, Any]) -> bool: ...
    def read(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    def deletion_grace(self, uid: str) -> float | None: ...


class ConfigError(Exception):
    """A container cannot be made yet (reason, message): it waits, as kubelet's containers do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class _Container:
    name: str
    spec: dict[str, Any]
    log: Path
    proc: subprocess.Popen | None = None
    started_at: str | None = None
    exit_code: int | None = None
    finished_at: str | None = None
    reason: str = ""  # of the terminated state
    message: str = ""
    waiting: tuple[str, str] = ("ContainerCreating", "")

    def state(self) -> dict[str, Any]:
        if self.exit_code is not None:
            done = {"exitCode": self.exit_code, "reason": self.reason, "startedAt": self.started_at,
                    "finishedAt": self.finished_at}
            return {"terminated": {**done, **({"message": self.message} if self.message else {})}}
        if self.proc is not None:
            return {"running": {"startedAt": self.started_at}}
        reason, message = self.waiting
        return {"waiting": {"reason": reason, **({"message": message} if message else {})}}

    def status(self) -> dict[str, Any]:
        running = self.proc is not None and self.exit_code is None
        return {"name": self.name, "image": self.spec.get("image", ""), "imageID": "", "ready": running,
                "started": running, "restartCount": 0, "state": self.state(),
                **({"containerID": f"emulated://{self.proc.pid}"} if self.proc is not None else {})}


@dataclass
class _Pod:
    uid: str
    namespace: str
    name: str
    node: str
    ip: str
    folder: Path
    spec: dict[str, Any]
    containers: list[_Container]
    started: str = field(default_factory=now_rfc3339)
    written: dict[str, Any] | None = None
    done: bool = False  # its final status is written (Succeeded, Failed, Evicted)
    gone_since: float | None = None  # deleted from the API at (monotonic), its processes being ended

    def running(self) -> list[_Container]:
        return [c for c in self.containers if c.proc is not None and c.exit_code is None]


class Kubelet:
    """The emulated kubelet and scheduler (see the module's docstring); `start()`, `stop()`."""

    def __init__(self, state: ClusterState, nodes: tuple[EmulatedNode, ...], root: Path, *, python: str,
                 grace_s: float = 2.0, first_pod_ip: str = "127.0.0.100", api_port: int = 0) -> None:
        self.state, self.nodes, self.root, self.python, self.grace_s = state, nodes, root, python, grace_s
        self.first_ip, self.api_port = ipaddress.IPv4Address(first_pod_ip), api_port
        self._pods: dict[str, _Pod] = {}  # by uid
        self._logs: dict[tuple[str, str], dict[str, Path]] = {}  # read without the lock (the API's pod log)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emulated-kubelet", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop looking at pods and kill every container's process group."""
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            running = [c for pod in self._pods.values() for c in pod.running()]
            for container in running:
                _signal(container, signal.SIGKILL)
            for container in running:
                container.proc.wait(10)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.tick()
            except Exception:  # noqa: BLE001  (a bug here must not stop the kubelet; it is shown)
                traceback.print_exc()

    # --- the loop -----------------------------------------------------------------------------------------
    def tick(self) -> None:
        live = {p["metadata"]["uid"]: p for p in self.state.pods() if (p.get("metadata") or {}).get("uid")}
        with self._lock:
            for uid, pod in list(self._pods.items()):
                seen = live.get(uid)
                if seen is None or seen["metadata"].get("deletionTimestamp"):
                    self._end(pod)
            for uid, seen in live.items():
                pod = self._pods.get(uid)
                if pod is None and not seen["metadata"].get("deletionTimestamp"):
                    pod = self._bind(seen)
                if pod is not None and not pod.done and pod.gone_since is None:
                    self._advance(pod)

    def _bind(self, seen: dict[str, Any]) -> _Pod | None:
        """The scheduler's part: a node for the pod (or why none), then the kubelet's: its folder and IP."""
        meta, spec = seen["metadata"], seen.get("spec") or {}
        by_name = {node.name: node for node in self.nodes}
        if spec.get("nodeName"):
            node = by_name.get(spec["nodeName"])
            if node is None:
                return None  # bound to a node that is not there: stays Pending, as in a cluster
        else:
            node, why = self._fit(spec)
            if node is None:
                condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why}
                current = (seen.get("status") or {}).get("conditions") or []
                if condition not in [{k: c.get(k) for k in condition} for c in current]:
                    self.state.patch_pod(meta["namespace"], meta["name"], meta["uid"],
                                         {"status": {"phase": "Pending", "conditions": [
                                             {**condition, "lastTransitionTime": now_rfc3339()}]}})
                return None
            if not self.state.patch_pod(meta["namespace"], meta["name"], meta["uid"], {"spec": {"nodeName": node.name}}):
                return None
        folder = self.root / "pods" / meta["namespace"] / meta["name"]
        if folder.exists():  # an earlier pod of that name: its folder is kept beside (pod names have no * ? [)
            folder.rename(folder.with_name(f"{meta['name']}~{len(list(folder.parent.glob(meta['name'] + '~*'))) + 1}"))
        for sub in ("home", "root", "volumes"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        containers = [_Container(c.get("name", f"c{i}"), c, folder / ("container.log" if i == 0 else
                                                                      f"container-{c.get('name', i)}.log"))
                      for i, c in enumerate(spec.get("containers") or [])]
        pod = _Pod(meta["uid"], meta["namespace"], meta["name"], node.name, self._allocate_ip(), folder,
                   {**spec, "nodeName": node.name}, containers)
        self._pods[pod.uid] = pod
        self._logs[(pod.namespace, pod.name)] = {c.name: c.log for c in containers}
        return pod

    def _fit(self, spec: dict[str, Any]) -> tuple[EmulatedNode | None, str]:
        wants = pod_requests(spec)
        reasons: Counter = Counter()
        for node in self.nodes:
            if not node_matches(node, spec):
                reasons["node(s) didn't match Pod's node affinity/selector"] += 1
                continue
            free = node.capacity()
            for pod in self._pods.values():
                if pod.node == node.name and not pod.done:
                    for key, value in pod_requests(pod.spec).items():
                        free[key] = free.get(key, Decimal(0)) - value
            short = [key for key, value in wants.items() if value > 0 and value > free.get(key, Decimal(0))]
            if not short:
                return node, ""
            for key in short:
                reasons["Too many pods" if key == "pods" else f"Insufficient {key}"] += 1
        listed = ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
        return None, f"0/{len(self.nodes)} nodes are available: {listed}."

    def _allocate_ip(self) -> str:
        taken = {pod.ip for pod in self._pods.values()}
        k = 0
        while str(self.first_ip + k) in taken or (int(self.first_ip + k) & 0xFF) in (0, 255):
            k += 1
        return str(self.first_ip + k)

    def _advance(self, pod: _Pod) -> None:
        for container in pod.containers:
            if container.proc is None and container.exit_code is None:
                self._start(pod, container)
            elif container.exit_code is None and _exited(container):
                _reap(container)
        self._write(pod)

    def _write(self, pod: _Pod, extra: dict[str, Any] | None = None) -> None:
        states = [c.state() for c in pod.containers]
        if any("waiting" in s for s in states):
            phase = "Pending"
        elif any("running" in s for s in states):
            phase = "Running"
        else:
            phase = "Succeeded" if all(s["terminated"]["exitCode"] == 0 for s in states) else "Failed"
        if extra:
            phase = extra["phase"]
        ready = phase == "Running"
        ready_reason = {} if ready else {"reason": "PodCompleted" if phase in ("Succeeded", "Failed")
                                         else "ContainersNotReady"}
        conditions = [{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
                      {"type": "ContainersReady", "status": str(ready), **ready_reason},
                      {"type": "Ready", "status": str(ready), **ready_reason}]
        status = {"phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": pod.ip,
                  "podIPs": [{"ip": pod.ip}], "startTime": pod.started, "conditions": conditions,
                  "containerStatuses": [c.status() for c in pod.containers], **(extra or {})}
        if extra and extra.get("conditions"):
            status["conditions"] = conditions + extra["conditions"]
        if status != pod.written:
            self.state.patch_pod(pod.namespace, pod.name, pod.uid, {"status": status})
            pod.written = status
        pod.done = phase in ("Succeeded", "Failed")

    # --- containers ---------------------------------------------------------------------------------------
    def _start(self, pod: _Pod, container: _Container) -> None:
        try:
            env = self._env(pod, container.spec)
            cwd = self._volumes(pod, container.spec)
        except ConfigError as exc:
            container.waiting = (exc.reason, exc.message)
            return
        if not container.spec.get("command"):
            container.waiting = ("CreateContainerError", "the emulated kubelet has no images to take an "
                                 + "entrypoint from: give the container a command")
            return
        argv = [expand(str(a), env) for a in container.spec["command"] + (container.spec.get("args") or [])]
        if argv[0] in ("python", "python3"):
            argv[0] = self.python
        container.started_at = now_rfc3339()
        try:
            with open(container.log, "ab") as log:
                container.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                                  stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            container.exit_code, container.reason, container.finished_at = 128, "StartError", now_rfc3339()
            container.message = f'failed to start the container process: exec: "{argv[0]}": {exc.strerror}'

    def _env(self, pod: _Pod, spec: dict[str, Any]) -> dict[str, str]:
        """A minimal base and the container's env: values (with `$(VAR)` of those before), fieldRefs,
        secretKeyRefs and configMapKeyRefs (a missing one: CreateContainerConfigError, until it is there)."""
        env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": str(pod.folder / "home"), "HOSTNAME": pod.name,
               "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.api_port)}
        fields = {"status.podIP": pod.ip, "status.hostIP": "127.0.0.1", "metadata.name": pod.name,
                  "metadata.namespace": pod.namespace, "metadata.uid": pod.uid, "spec.nodeName": pod.node,
                  "spec.serviceAccountName": pod.spec.get("serviceAccountName", "default")}
        for item in spec.get("env") or []:
            name, source = item["name"], item.get("valueFrom") or {}
            if "fieldRef" in source:
                path = source["fieldRef"].get("fieldPath", "")
                if path not in fields:
                    raise ConfigError("CreateContainerConfigError", f"the emulated kubelet cannot resolve {path}")
                env[name] = fields[path]
            elif "secretKeyRef" in source or "configMapKeyRef" in source:
                kind, what, ref = (("secrets", "Secret", source["secretKeyRef"]) if "secretKeyRef" in source
                                   else ("configmaps", "ConfigMap", source["configMapKeyRef"]))
                obj = self.state.read(kind, pod.namespace, ref.get("name", "")) or {}
                data = obj.get("data") or {}
                if kind == "secrets":
                    data = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items()}
                if ref.get("key") in data:
                    env[name] = data[ref["key"]]
                elif not ref.get("optional"):
                    raise ConfigError("CreateContainerConfigError", f"couldn't find key {ref.get('key')} in {what} "
                                      f"{pod.namespace}/{ref.get('name')}" if obj else
                                      f'{kind[:-1]} "{ref.get("name")}" not found')
            else:
                env[name] = expand(str(item.get("value", "")), env)
        return env

    def _volumes(self, pod: _Pod, spec: dict[str, Any]) -> str:
        """Every volume an empty folder (whatever its kind); the cwd: the workingDir's folder when it is under
        a volume's mount path, else the pod's root folder (there is no mount namespace: nothing else maps)."""
        working = spec.get("workingDir") or ""
        for volume in pod.spec.get("volumes") or []:
            (pod.folder / "volumes" / volume["name"]).mkdir(parents=True, exist_ok=True)
        for mount in spec.get("volumeMounts") or []:
            base = mount.get("mountPath", "").rstrip("/")
            if base and (working == base or working.startswith(base + "/")):
                cwd = pod.folder / "volumes" / mount["name"] / working[len(base):].lstrip("/")
                cwd.mkdir(parents=True, exist_ok=True)
                return str(cwd)
        return str(pod.folder / "root")

    # --- endings ------------------------------------------------------------------------------------------
    def _end(self, pod: _Pod) -> None:
        """The pod was deleted: SIGTERM its containers' groups, SIGKILL after the grace, then forget it."""
        if pod.gone_since is None:
            pod.gone_since = time.monotonic()
            for container in pod.running():
                _signal(container, signal.SIGTERM)
        grace = min(x for x in (self.grace_s, pod.spec.get("terminationGracePeriodSeconds"),
                                self.state.deletion_grace(pod.uid)) if x is not None)
        for container in pod.running():
            if _exited(container):
                _reap(container)
            elif time.monotonic() - pod.gone_since >= grace:
                _signal(container, signal.SIGKILL)
        if not pod.running():
            del self._pods[pod.uid]  # its log stays readable (`log()`), as the folder does

    def evict(self, namespace: str, name: str, message: str) -> None:
        """As the kubelet under node pressure: kill the pod's processes, then phase Failed, reason Evicted."""
        with self._lock:
            pod = self._find(namespace, name)
            if pod is None or pod.done:
                raise LookupError(f"pod {namespace}/{name} is not running on an emulated node: nothing to evict")
            for container in pod.running():
                _signal(container, signal.SIGKILL)
            for container in pod.containers:
                if container.proc is not None and container.exit_code is None:
                    container.proc.wait(10)
                if container.exit_code is None:
                    container.exit_code, container.reason, container.finished_at = 137, "ContainerStatusUnknown", \
                        now_rfc3339()
                    container.message = "The container could not be located when the pod was terminated"
            self._write(pod, {"phase": "Failed", "reason": "Evicted", "message": message, "conditions": [
                {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet", "message": message}]})

    def _find(self, namespace: str, name: str) -> _Pod | None:
        found = [p for p in self._pods.values() if (p.namespace, p.name) == (namespace, name) and p.gone_since is None]
        return found[-1] if found else None

    def pid(self, namespace: str, name: str, container: str | None = None) -> int | None:
        with self._lock:
            pod = self._find(namespace, name)
            for each in (pod.containers if pod else []):
                if each.proc is not None and (container is None or each.name == container):
                    return each.proc.pid
        return None

    def running_pids(self, namespace: str, name: str) -> list[int]:
        """The pids of the pod's containers still running (deleted pods' included, until they are killed)."""
        with self._lock:
            return [c.proc.pid for p in self._pods.values() if (p.namespace, p.name) == (namespace, name)
                    for c in p.running()]

    def log_path(self, namespace: str, name: str, container: str | None = None) -> Path | None:
        """The container's log file once it has started (no lock: the API server's loop asks too)."""
        logs = self._logs.get((namespace, name)) or {}
        path = logs.get(container) if container else next(iter(logs.values()), None)
        return path if path is not None and path.exists() else None


def _exited(container: _Container) -> bool:
    """Whether the container's main process has exited, without reaping it (its pid stays its own)."""
    try:
        return os.waitid(os.P_PID, container.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return container.proc.returncode is not None


def _reap(container: _Container) -> None:
    """The main process has exited: kill what it left in its group (the zombie still holds the group's id, so
    no other process can have it), then reap it; its exit as a container's (128+N when killed by signal N)."""
    _signal(container, signal.SIGKILL)
    code = container.proc.wait()
    container.exit_code, container.finished_at = 128 - code if code < 0 else code, now_rfc3339()
    container.reason = "Completed" if code == 0 else "Error"


def _signal(container: _Container, sig: int) -> None:
    if container.proc is not None and container.proc.returncode is None:
        try:
            os.killpg(container.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
