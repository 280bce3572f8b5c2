"""An emulated Kubernetes for the tests, NOT a real cluster: an emulated API server (kmock's
KubernetesEmulator, an in-memory Kubernetes-shaped HTTP server on a real loopback port) and the test
itself as kubelet and scheduler (cible.testing.kubelet: pods' containers run as local processes).

No real kube-apiserver, kubelet or container runtime can run on the test machines (none is packaged
for them), so code under test talks to `k8s.url` with the official `kubernetes` client and
`k8s.kubeconfig`, exactly as to a cluster, and must not need to know it is emulated.

What the emulated API server adds to kmock's: namespaces (the harness's, and those created through the
API; a create in another is 404, as the real server's admission says), label and field selectors on
lists and watches (and watches' timeoutSeconds), metadata.uid, creationTimestamp and resourceVersion,
a new pod's status Pending, a secret's stringData stored as data, the pod log subresource, bearer-token
authentication (401), RBAC refusals (`forbid`, 403) and Kubernetes' wording of 404 and 409.
What it does not do: validation, defaulting, strategic-merge or JSON patches (merge patches only:
lists are replaced), graceful deletion (a deleted pod disappears at once; the kubelet then ends it),
kubectl (its discovery of kmock's resources goes wrong, and client-go sends no token over http).

    with EmulatedKubernetes(tmp_path, namespaces=("default", "ml"),
                            nodes=(EmulatedNode("node-a", cpu="4", memory="8Gi"),)) as k8s:
        api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(k8s.kubeconfig)))
"""

from __future__ import annotations

import asyncio
import base64
import copy
import gzip
import re
import secrets
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import kmock
import yaml
from kmock._internal.k8s import KubernetesObjectConflictError

from cible.testing.kubelet import EmulatedNode, Kubelet, now_rfc3339

__all__ = ["EmulatedKubernetes", "EmulatedNode"]

PODS = kmock.resource("", "v1", "pods")
INSTANCE_TYPES = kmock.resource("amlarc.azureml.com", "v1alpha1", "instancetypes")
_VERBS = {kmock.action.CREATE: "create", kmock.action.FETCH: "get", kmock.action.LIST: "list",
          kmock.action.WATCH: "watch", kmock.action.UPDATE: "patch", kmock.action.DELETE: "delete"}
T = TypeVar("T")


def _status(code: int, reason: str, message: str, **details: Any) -> aiohttp.web.Response:
    return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                                      "code": code, "reason": reason, "message": message, "details": details},
                                     status=code)


def _dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _requirement(term: str, get: Callable[[str], str | None], field: bool) -> bool:
    """One requirement of a label selector (=, ==, !=, in, notin, key, !key) or a field selector."""
    if found := re.fullmatch(r"\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s,]*)\s*", term):
        key, op, value = found.groups()
        return (get(key) == value) != (op == "!=") if not field else (str(get(key) or "") == value) != (op == "!=")
    if (found := re.fullmatch(r"\s*([^\s!=(),]+)\s+(in|notin)\s*\(([^)]*)\)\s*", term)) and not field:
        key, op, values = found.groups()
        return (get(key) in {v.strip() for v in values.split(",")}) == (op == "in")
    if (found := re.fullmatch(r"\s*(!?)\s*([^\s!=(),]+)\s*", term)) and not field:
        return (get(found.group(2)) is None) == bool(found.group(1))
    raise kmock.KubernetesError(status=400, reason="BadRequest", message=f"unable to parse requirement: {term!r}",
                                details={})


def selected(obj: dict[str, Any], labels: str | None = None, fields: str | None = None) -> bool:
    """Whether an object matches a labelSelector and a fieldSelector (as the API server filters lists)."""
    mine = (obj.get("metadata") or {}).get("labels") or {}
    return (all(_requirement(t, mine.get, False) for t in re.split(r",(?![^(]*\))", labels or "") if t.strip())
            and all(_requirement(t, lambda k: _dig(obj, k), True) for t in (fields or "").split(",") if t.strip()))


class _Emulator(kmock.KubernetesEmulator):
    """kmock's KubernetesEmulator with what a client of a real API server relies on (module docstring)."""

    def __init__(self, namespaces: Iterable[str], token: str, user: str,
                 log_path: Callable[[str, str, str | None], Path | None]) -> None:
        self.namespaces, self.token, self.user, self.log_path = set(namespaces), token, user, log_path
        self.forbidden: set[tuple[str, str, str]] = set()  # (namespace or "", resource[/sub], verb)
        self.deletion_grace: dict[str, float] = {}  # by uid: a DELETE's gracePeriodSeconds
        self.version = 0
        super().__init__()
        # The core resources (kmock's bundled discovery data), so that their lists answer [] before any object exists.
        self.resources.load_data(gzip.decompress((resources.files("kmock._internal") / "resources.json.gz").read_bytes()))
        self.resources[INSTANCE_TYPES] = kmock.ResourceInfo(kind="InstanceType", singular="instancetype",
                                                            namespaced=False, verbs={"get", "list", "create"})

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw.headers.get("Authorization") != f"Bearer {self.token}":  # (kubectl sends none over http: refused)
            return _status(401, "Unauthorized", "Unauthorized")
        if found := re.fullmatch(r"/api/v1/namespaces(?:/([^/]+))?/?", raw.path):
            return await self._namespaces(raw, found.group(1))
        return await super().__call__(raw)

    async def _namespaces(self, raw: aiohttp.web.BaseRequest, name: str | None) -> aiohttp.web.StreamResponse:
        """Namespaces, which kmock cannot serve: the harness's set, listed, read and created."""
        def manifest(ns: str) -> dict[str, Any]:
            return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}}

        if raw.method == "GET" and name is None:
            return aiohttp.web.json_response({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {},
                                              "items": [manifest(ns) for ns in sorted(self.namespaces)]})
        if raw.method == "POST" and name is None:
            name = ((await raw.json()).get("metadata") or {}).get("name") or ""
            if name in self.namespaces:
                return _status(409, "AlreadyExists", f'namespaces "{name}" already exists', name=name, kind="namespaces")
            self.namespaces.add(name)
            return aiohttp.web.json_response(manifest(name), status=201)
        if raw.method == "GET" and name in self.namespaces:
            return aiohttp.web.json_response(manifest(name))
        if raw.method == "GET":
            return _status(404, "NotFound", f'namespaces "{name}" not found', name=name, kind="namespaces")
        return _status(405, "MethodNotAllowed", "the emulated API server lists, reads and creates namespaces only")

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError):  # kmock would put its traceback in the details
            return _status(exc.status, exc.reason or "InternalError", exc.message or "", **(exc.details or {}))
        return await super()._render_error(exc)

    def _live(self, resource: Any, namespace: str | None, name: str | None) -> Any:
        for (res, ns, nm), obj in self._objects.items():
            if res == resource and ns == namespace and nm == name and not obj.deleted:
                return obj
        return None

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        resource, ns, name = request.resource, request.namespace, request.name
        if resource is None or resource.plural is None:
            return await super()._handle(request)
        plural, group = resource.plural, resource.group or ""
        what = f"{plural}.{group}" if group else plural
        verb = _VERBS.get(request.action, str(request.method).lower())
        full = f"{plural}/{request.subresource}" if request.subresource else plural
        if (ns or "", full, verb) in self.forbidden:
            where, named = f'in the namespace "{ns}"' if ns else "at the cluster scope", f' "{name}"' if name else ""
            raise kmock.KubernetesError(
                status=403, reason="Forbidden", details={"name": name or "", "group": group, "kind": plural},
                message=f'{what}{named} is forbidden: User "{self.user}" cannot {verb} resource "{full}" in API group '
                        f'"{group}" {where}')
        data = request.data
        if request.action == kmock.action.CREATE and isinstance(data, dict):
            self._admit(request, data)
            name = data["metadata"]["name"]
        elif request.action == kmock.action.UPDATE:
            kind = str(request.headers.get("Content-Type", ""))
            if not isinstance(data, dict) or "json-patch" in kind or "apply-patch" in kind:
                raise kmock.KubernetesError(status=415, reason="UnsupportedMediaType", details={},
                                            message="the emulated API server (kmock) applies merge patches only")
            data.setdefault("metadata", {})["resourceVersion"] = self._next_version()
        elif request.action == kmock.action.DELETE and (obj := self._live(resource, ns, name)) is not None:
            grace = request.params.get("gracePeriodSeconds", (data if isinstance(data, dict) else {}).get(
                "gracePeriodSeconds"))
            if grace is not None:
                self.deletion_grace[obj["metadata"].get("uid", "")] = float(grace)
        elif request.action == kmock.action.FETCH and resource == PODS and request.subresource == "log":
            return self._pod_log(request)
        try:
            return await super()._handle(request)
        except kmock.KubernetesObjectNotFoundError:
            raise kmock.KubernetesError(status=404, reason="NotFound", message=f'{what} "{name}" not found',
                                        details={"name": name, "group": group, "kind": plural}) from None
        except KubernetesObjectConflictError:
            raise kmock.KubernetesError(status=409, reason="AlreadyExists", message=f'{what} "{name}" already exists',
                                        details={"name": name, "group": group, "kind": plural}) from None
        except kmock.KubernetesResourceNotFoundError:
            raise kmock.KubernetesError(status=404, reason="NotFound", details={},
                                        message="the server could not find the requested resource") from None

    def _admit(self, request: kmock.Request, data: dict[str, Any]) -> None:
        """What the real API server does to a new object: its namespace must exist; a name (generateName);
        uid, creationTimestamp, resourceVersion; apiVersion and kind; a secret's stringData as data."""
        resource, ns = request.resource, request.namespace
        meta = data.setdefault("metadata", {})
        if ns is not None and meta.get("namespace") not in (None, ns):
            raise kmock.KubernetesError(status=400, reason="BadRequest", details={}, message=(
                "the namespace of the provided object does not match the namespace sent on the request"))
        if ns is not None and ns not in self.namespaces:
            raise kmock.KubernetesError(status=404, reason="NotFound", message=f'namespaces "{ns}" not found',
                                        details={"name": ns, "kind": "namespaces"})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        if not meta.get("name"):
            raise kmock.KubernetesError(status=422, reason="Invalid", details={}, message=(
                f'{resource.plural} "" is invalid: metadata.name: Required value: name or generateName is required'))
        if ns is not None:
            meta["namespace"] = ns
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), resourceVersion=self._next_version())
        data.setdefault("apiVersion", f"{resource.group}/{resource.version}" if resource.group else resource.version)
        if resource in self.resources and self.resources[resource].kind:
            data.setdefault("kind", self.resources[resource].kind)
        if resource == PODS:
            data["status"] = {"phase": "Pending"}  # what the client sent is not kept
        if resource.plural == "secrets" and resource.group == "":
            encoded = {k: base64.b64encode(str(v).encode()).decode() for k, v in (data.pop("stringData", {}) or {}).items()}
            data.update(type=data.get("type") or "Opaque", data={**(data.get("data") or {}), **encoded})

    def _pod_log(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self._live(PODS, request.namespace, request.name) is None:
            raise kmock.KubernetesError(status=404, reason="NotFound", message=f'pods "{request.name}" not found',
                                        details={"name": request.name, "kind": "pods"})
        container = request.params.get("container")
        path = self.log_path(request.namespace or "", request.name or "", container)
        if path is None:
            raise kmock.KubernetesError(status=400, reason="BadRequest", details={}, message=(
                f'container "{container or ""}" in pod "{request.name}" is waiting to start: ContainerCreating'))
        text = path.read_text(errors="replace")
        if request.params.get("tailLines"):
            text = "".join(text.splitlines(keepends=True)[-int(request.params["tailLines"]):])
        return aiohttp.web.Response(text=text, content_type="text/plain")

    async def _serve_list(self, request: kmock.Request) -> dict[str, Any]:
        found = await super()._serve_list(request)
        labels, fields = request.params.get("labelSelector"), request.params.get("fieldSelector")
        kind = self.resources[request.resource].kind if request.resource in self.resources else None
        group, version = request.resource.group, request.resource.version
        return {"apiVersion": f"{group}/{version}" if group else version, **({"kind": f"{kind}List"} if kind else {}), "metadata": {"resourceVersion": str(self.version)},
                "items": [item for item in found["items"] if selected(item, labels, fields)]}

    async def _serve_watch(self, request: kmock.Request) -> Any:
        """kmock's watch, with the selectors and timeoutSeconds (the stream ends, as the real one does)."""
        labels, fields = request.params.get("labelSelector"), request.params.get("fieldSelector")
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        events = super()._serve_watch(request)
        try:
            while True:
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return
                try:
                    event = await asyncio.wait_for(events.__anext__(), left)
                except (StopAsyncIteration, asyncio.TimeoutError):
                    return
                if not isinstance(event, dict) or selected(event.get("object") or {}, labels, fields):
                    yield event
        finally:
            await events.aclose()

    # --- in-memory access for the harness and the kubelet (in the server's loop) ---------------------------
    async def snapshot(self, resource: Any, namespace: str | None = None) -> list[dict[str, Any]]:
        async with self._lock:
            return [copy.deepcopy(obj.raw) for (res, ns, _), obj in self._objects.items()
                    if res == resource and not obj.deleted and namespace in (None, ns)]

    async def read(self, resource: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        async with self._lock:
            obj = self._live(resource, namespace, name)
            return copy.deepcopy(obj.raw) if obj is not None else None

    async def patch_live(self, resource: Any, namespace: str | None, name: str, uid: str, patch: dict) -> bool:
        """Patch an object if it is still there (the same uid); watchers see it MODIFIED."""
        async with self._lock:
            obj = self._live(resource, namespace, name)
            if obj is None or obj["metadata"].get("uid") != uid:
                return False
            change = copy.deepcopy(patch)
            change.setdefault("metadata", {})["resourceVersion"] = self._next_version()
            obj.patch(change)
            await self._buses[resource].put({"type": "MODIFIED", "object": obj.raw})
            return True

    async def put(self, resource: Any, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object as the cluster's own controllers would (no admission)."""
        async with self._lock:
            meta = body.setdefault("metadata", {})
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), resourceVersion=self._next_version())
            key = (resource, namespace, meta["name"])
            event = "ADDED" if self._live(*key) is None else "MODIFIED"
            if key in self._objects:
                self._objects[key].create(body)
            else:
                self._objects[key] = body
            await self._buses[resource].put({"type": event, "object": copy.deepcopy(body)})
            return copy.deepcopy(body)


class _State:
    """The kubelet's view of the API server: in-memory calls into the server's loop (cible.testing.kubelet)."""

    def __init__(self, k8s: EmulatedKubernetes) -> None:
        self.k8s = k8s

    def pods(self) -> list[dict[str, Any]]:
        return self.k8s._call(self.k8s._emu.snapshot(PODS))

    def patch_pod(self, namespace: str, name: str, uid: str, patch: dict[str, Any]) -> bool:
        return self.k8s._call(self.k8s._emu.patch_live(PODS, namespace, name, uid, patch))

    def read(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.k8s._call(self.k8s._emu.read(kmock.resource("", "v1", plural), namespace, name))

    def deletion_grace(self, uid: str) -> float | None:
        return self.k8s._emu.deletion_grace.get(uid)


class EmulatedKubernetes:
    """An emulated cluster for a test (see the module's docstring): `with EmulatedKubernetes(tmp_path) as k8s`
    starts the emulated API server on 127.0.0.1 (a free port, or `port`) and the kubelet thread; leaving
    kills every container's process group and stops the server. Pods' folders are under `root`/pods."""

    def __init__(self, root: Path, *, namespaces: Iterable[str] = ("default",),
                 nodes: Iterable[EmulatedNode] = (EmulatedNode("node-1"),), python: str = sys.executable,
                 port: int | None = None, grace_s: float = 2.0, first_pod_ip: str = "127.0.0.100",
                 user: str = "cible-test", token: str = "cible-test-token") -> None:
        self.root, self.namespaces, self.nodes, self.python = Path(root), tuple(namespaces), tuple(nodes), python
        self.port, self.grace_s, self.first_pod_ip, self.user, self.token = port, grace_s, first_pod_ip, user, token
        self.kubeconfig = self.root / "kubeconfig"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: aiohttp.web.ServerRunner | None = None
        self._core: Any = None
        self._closed_port: socket.socket | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> EmulatedKubernetes:  # noqa: PYI034
        self.root.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="emulated-kube-apiserver", daemon=True)
        self._thread.start()
        try:
            self._emu = self._call(self._make_emulator())
            self.start_api()
            self.kubelet = Kubelet(_State(self), self.nodes, self.root, python=self.python, grace_s=self.grace_s,
                                   first_pod_ip=self.first_pod_ip, api_port=self.port or 0)
            self._emu.log_path = self.kubelet.log_path
            for node in self.nodes:
                self._call(self._emu.put(kmock.resource("", "v1", "nodes"), None, node.manifest()))
            self._write_kubeconfig()
            self.kubelet.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if getattr(self, "kubelet", None) is not None:
            self.kubelet.stop()
        if self._core is not None:
            self._core.api_client.close()
            self._core = None
        if self._loop is not None and self._thread.is_alive():
            self.stop_api()
            if getattr(self, "_emu", None) is not None:
                self._call(self._emu.__aexit__(None, None, None))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
        if self._closed_port is not None:
            self._closed_port.close()

    def _call(self, coro: Any, timeout: float = 30) -> Any:
        assert self._loop is not None, "the emulated cluster is not started (use it in a `with` block)"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _make_emulator(self) -> _Emulator:
        emu = _Emulator(self.namespaces, self.token, self.user, lambda ns, name, container: None)
        await emu.__aenter__()
        return emu

    def start_api(self) -> None:
        """Serve the API (again) on its port: clients reach it; the kubelet never stopped."""
        self._call(self._start_server())

    def stop_api(self) -> None:
        """Make the API server unreachable (connections refused, open ones closed); pods keep running."""
        self._call(self._stop_server())

    async def _start_server(self) -> None:
        if self._runner is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port or 0))
        self.port = sock.getsockname()[1]
        runner = aiohttp.web.ServerRunner(aiohttp.web.Server(self._emu), handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        await aiohttp.web.SockSite(runner, sock).start()
        self._runner = runner

    async def _stop_server(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _write_kubeconfig(self) -> None:
        """Contexts `emulated` (current) and `elsewhere` (a loopback port bound but never listening: refused)."""
        self._closed_port = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._closed_port.bind(("127.0.0.1", 0))
        closed = self._closed_port.getsockname()[1]
        config = {"apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": "emulated",
                  "clusters": [{"name": "emulated", "cluster": {"server": self.url}},
                               {"name": "elsewhere", "cluster": {"server": f"http://127.0.0.1:{closed}"}}],
                  "users": [{"name": self.user, "user": {"token": self.token}}],
                  "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": self.user,
                                                                "namespace": self.namespaces[0]}},
                               {"name": "elsewhere", "context": {"cluster": "elsewhere", "user": self.user}}]}
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    # --- for tests -----------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def core(self) -> Any:
        """A kubernetes.client.CoreV1Api on the emulated API server (through HTTP, for a test's own checks)."""
        if self._core is None:
            from kubernetes import client, config

            self._core = client.CoreV1Api(config.new_client_from_config(str(self.kubeconfig), context="emulated"))
        return self._core

    def pods(self, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        """The pods there now (raw JSON, read in memory: also while the API is stopped)."""
        return [p for p in self._call(self._emu.snapshot(PODS, namespace)) if selected(p, selector)]

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call(self._emu.read(PODS, namespace, name))

    def wait_for(self, predicate: Callable[[], T], timeout: float = 30, what: str = "", interval: float = 0.05) -> T:
        """Poll `predicate` until it returns something truthy (returned); fail at the deadline, saying the pods."""
        deadline = time.monotonic() + timeout
        while not (last := predicate()):
            if time.monotonic() >= deadline:
                states = "; ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']}: "
                                   f"{(p.get('status') or {}).get('phase', '-')}" for p in self.pods())
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate!r} "
                                     f"(last: {last!r}; pods: {states or 'none'})")
            time.sleep(interval)  # polling, bounded by the deadline
        return last

    def forbid(self, namespace: str | None, resource: str = "pods", verb: str = "create") -> None:
        """RBAC as a Role would say it: `verb` on `resource` (e.g. "pods", "pods/log") in `namespace` (None:
        cluster-scoped) answers 403 Forbidden with the API server's message. Verbs: create, get, list, watch,
        patch, delete."""
        self._emu.forbidden.add((namespace or "", resource, verb))

    def allow(self, namespace: str | None, resource: str = "pods", verb: str = "create") -> None:
        self._emu.forbidden.discard((namespace or "", resource, verb))

    def add_instance_type(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """A cluster-scoped amlarc.azureml.com/v1alpha1 InstanceType (as the AzureML extension's CRD holds)."""
        body = {"apiVersion": "amlarc.azureml.com/v1alpha1", "kind": "InstanceType", "metadata": {"name": name},
                "spec": copy.deepcopy(spec)}
        return self._call(self._emu.put(INSTANCE_TYPES, None, body))

    def evict(self, namespace: str, pod_name: str, message: str = "The node was low on resource: memory.") -> None:
        """As the kubelet under node pressure: kill the pod's processes; phase Failed, reason Evicted."""
        self.kubelet.evict(namespace, pod_name, message)

    def delete_pod(self, namespace: str, pod_name: str, timeout: float = 30) -> None:
        """`kubectl delete pod` (through the API); returns once the kubelet has ended its processes."""
        self.core.delete_namespaced_pod(pod_name, namespace)
        self.wait_for(lambda: not self.kubelet.running_pids(namespace, pod_name), timeout,
                      f"the processes of deleted pod {namespace}/{pod_name} to end")

    def pid(self, namespace: str, pod_name: str, container: str | None = None) -> int | None:
        """The pid of the pod's (first, or named) container's process once started."""
        return self.kubelet.pid(namespace, pod_name, container)

    def log(self, namespace: str, pod_name: str, container: str | None = None) -> str:
        """The container's stdout and stderr so far ("" before it starts)."""
        path = self.kubelet.log_path(namespace, pod_name, container)
        return path.read_text(errors="replace") if path is not None else ""
