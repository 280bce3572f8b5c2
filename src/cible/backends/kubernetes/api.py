"""The way to one Kubernetes cluster: its API client (from a kubeconfig), and its failures in words.

cible talks to the API server with the official `kubernetes` client only. A kubeconfig is read
where it lies on the server's machine (its path is stored, never its content: it holds the
cluster's credentials) each time a client is made; clients are kept per kubeconfig, context and
file version. Without a kubeconfig: $KUBECONFIG or ~/.kube/config, or the pod's service account
when the server itself runs in a cluster.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cible.core.models.kubernetes import (
    INSTANCE_TYPE_GROUP,
    INSTANCE_TYPE_PLURAL,
    INSTANCE_TYPE_VERSION,
    InstanceType,
)

TIMEOUT = (5, 15)  # connect, read (s): an API server that does not answer is said, not waited on


class KubernetesUnreachable(Exception):  # noqa: N818  (a state of the cluster, not a bug)
    """The API server cannot be reached or refused the call; `reason` is one of unreachable,
    kubeconfig, forbidden, no_namespace, refused; the message says what to do."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach one attached cluster, and where its node pods go."""

    compute: str  # the kubernetes compute's name
    namespace: str
    kubeconfig: str | None = None
    context: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kubeconfig or "", self.context or "", self.namespace)


@dataclass(frozen=True)
class PodTemplate:
    """What a node pod of a pool is: the cluster, its instance type, and how the agent starts."""

    access: ClusterAccess
    pool: str  # the cible compute its nodes are (<compute>:<instance type>)
    instance_type: str
    spec: InstanceType
    image: str
    python: str
    server_url: str | None = None
    service_account: str | None = None
    image_pull_secrets: tuple[str, ...] = field(default_factory=tuple)


_clients: dict[tuple[str, str, float], Any] = {}
_clients_lock = threading.Lock()


def api_client(access: ClusterAccess) -> Any:
    """A `kubernetes.client.ApiClient` for the cluster (made again when its kubeconfig file changes)."""
    from kubernetes import client, config

    path = access.kubeconfig or os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    try:
        version = Path(path).stat().st_mtime
    except OSError:
        version = -1.0
    key = (path, access.context or "", version)
    with _clients_lock:
        if key in _clients:
            return _clients[key]
    try:
        if version < 0 and access.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            made = client.ApiClient(configuration)
        elif version < 0:
            raise KubernetesUnreachable(f"no kubeconfig at {path}: give --kubeconfig (a file on the workspace "
                                        "server's machine) or set KUBECONFIG for the server", "kubeconfig")
        else:
            made = config.new_client_from_config(config_file=path, context=access.context)
    except KubernetesUnreachable:
        raise
    except Exception as exc:  # noqa: BLE001  (any file may be named: it is said, never a 500)
        raise KubernetesUnreachable(f"the kubeconfig {path} cannot be used: {_config_problem(exc)}",
                                    "kubeconfig") from None
    with _clients_lock:
        _clients[key] = made
    return made


def _config_problem(exc: Exception) -> str:
    """Why a kubeconfig cannot be read, without quoting the file: a file named by mistake (a key, a token)
    must not reach an error body, and YAML's errors show the lines they stumble on."""
    import yaml

    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        return "it is not valid YAML" + (f" (line {mark.line + 1})" if mark is not None else "")
    if type(exc).__name__ == "ConfigException":  # the client's own words name keys and contexts, not values
        return str(exc).splitlines()[0][:200]
    return "it is not a kubeconfig (clusters, users and contexts)"


def server_of(access: ClusterAccess) -> str:
    return api_client(access).configuration.host


def core(access: ClusterAccess) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client(access))


def failure(exc: Exception, access: ClusterAccess, doing: str) -> KubernetesUnreachable:
    """What went wrong with a call (an ApiException, a connection error) as a sentence with its fix."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, KubernetesUnreachable):
        return exc
    where = _server(access)
    if not isinstance(exc, ApiException) or exc.status in (0, None):
        cause = str(getattr(exc, "reason", None) or exc).splitlines()[0][:240]
        return KubernetesUnreachable(f"the Kubernetes API server of compute {access.compute} ({where}) does not "
                                     f"answer while {doing}: {cause}", "unreachable")
    said = _message(exc)
    if exc.status == 401:
        return KubernetesUnreachable(f"the Kubernetes API server ({where}) does not accept the kubeconfig's "
                                     f"credentials while {doing}: {said}", "forbidden")
    if exc.status == 403:
        return KubernetesUnreachable(
            f"the Kubernetes API server ({where}) refused {doing}: {said}. Give the kubeconfig's user the right to "
            f"create, get, list and delete pods and secrets in namespace {access.namespace} (a Role and a "
            "RoleBinding)", "forbidden")
    if exc.status == 404 and "namespaces" in said and access.namespace in said:
        return KubernetesUnreachable(
            f"namespace {access.namespace} does not exist on the cluster of compute {access.compute} ({said}): "
            f"create it (kubectl create namespace {access.namespace}) or attach with --namespace of one that exists",
            "no_namespace")
    return KubernetesUnreachable(f"the Kubernetes API server ({where}) answered {exc.status} while {doing}: {said}",
                                 "refused")


def check_namespace(access: ClusterAccess) -> str | None:
    """Raise unless the API server answers and the namespace exists; a note when the kubeconfig's user
    may not read namespaces (the namespace is then taken as given)."""
    from kubernetes.client.exceptions import ApiException

    try:
        core(access).read_namespace(access.namespace, _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            raise KubernetesUnreachable(
                f"namespace {access.namespace} does not exist on the cluster ({_server(access)} says: "
                f"{_message(exc)}): create it (kubectl create namespace {access.namespace}) or give --namespace of "
                "one that exists", "no_namespace") from None
        if exc.status == 403:  # a namespaced user: fine, its pods' creation will say more
            return (f"the kubeconfig's user may not read namespace {access.namespace}; it is taken as existing "
                    "(a pod's creation will say otherwise)")
        raise failure(exc, access, f"reading namespace {access.namespace}") from None
    except Exception as exc:  # noqa: BLE001  (a connection error, a TLS failure: said with its cause)
        raise failure(exc, access, f"reading namespace {access.namespace}") from None
    return None


def cluster_instance_types(access: ClusterAccess) -> tuple[dict[str, InstanceType], list[str]]:
    """The InstanceType objects (Azure's CRD) the cluster defines, and notes on those that cannot be
    used; none when the CRD is not installed (a cluster without Azure's extension)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        listed = client.CustomObjectsApi(api_client(access)).list_cluster_custom_object(
            INSTANCE_TYPE_GROUP, INSTANCE_TYPE_VERSION, INSTANCE_TYPE_PLURAL, _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status in (403, 404):  # not installed, or not readable: the YAML's and the default remain
            return {}, ([] if exc.status == 404 else [("the kubeconfig's user may not list InstanceType objects; "
                                                       "only the compute's own cible.instance_types are known")])
        raise failure(exc, access, "listing the cluster's instance types") from None
    except Exception as exc:  # noqa: BLE001
        raise failure(exc, access, "listing the cluster's instance types") from None
    found, notes = {}, []
    for item in listed.get("items", []):
        name = (item.get("metadata") or {}).get("name")
        try:
            found[name] = InstanceType.model_validate(item.get("spec") or {})
        except ValueError as exc:
            notes.append(f"InstanceType {name} is left out: {str(exc).splitlines()[-1].strip()}")
    return found, notes


def _server(access: ClusterAccess) -> str:
    try:
        return server_of(access)
    except Exception:  # noqa: BLE001
        return access.kubeconfig or "the default kubeconfig"


def _message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason or exc.status)
