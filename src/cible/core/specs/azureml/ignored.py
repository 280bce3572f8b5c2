"""Keys Azure accepts that cible validates but does not act on yet.

Kept as data in one place: each present key yields one warning line, so nothing
is dropped silently. Remove an entry when cible starts honouring the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_ANY = object()


@dataclass(frozen=True)
class IgnoredKey:
    path: tuple[str, ...]
    only_if: Any = _ANY  # warn only when the value equals this (e.g. os_type: windows)


def _keys(*specs: str | tuple[str, Any]) -> tuple[IgnoredKey, ...]:
    out = []
    for spec in specs:
        dotted, only_if = spec if isinstance(spec, tuple) else (spec, _ANY)
        out.append(IgnoredKey(tuple(dotted.split(".")), only_if))
    return tuple(out)


_ENVIRONMENT = _keys(("os_type", "windows"), "inference_config")
# Keys under an ignored mapping that cible does act on: a mapping holding only those is not warned of
# (resources.properties.slurm: a Slurm job's partition, QOS, account and constraint).
ACTED_SUBKEYS: dict[tuple[str, ...], frozenset[str]] = {("resources", "properties"): frozenset({"slurm"})}

# An AutoML job's keys that cible's FLAML search does not act on: ensembles (the best single model is the
# job's), explanations, ONNX export and deep learning are Azure's AutoML SDK's; a setting that turns one off
# agrees with cible and is not warned of.
AUTOML_IGNORED = _keys(
    ("training.enable_stack_ensemble", "true"), ("training.enable_vote_ensemble", "true"),
    "training.stack_ensemble_settings", ("training.enable_model_explainability", "true"),
    ("training.enable_onnx_compatible_models", "true"), ("training.enable_dnn_training", "true"),
    "training.ensemble_model_download_timeout_minutes", "training.training_mode", "limits.max_nodes",
    ("featurization.enable_dnn_featurization", "true"), "featurization.dataset_language", "test_data_size",
    "positive_label", "log_verbosity",
)

IGNORED_KEYS: dict[str, tuple[IgnoredKey, ...]] = {
    "job": _keys(
        # queue_settings.job_tier and resources.instance_type size serverless jobs (the job service
        # notes when a job on another compute carries them).
        "services", "identity", "queue_settings.priority", ("distribution.type", "ray"),
        "resources.shm_size", "resources.docker_args",
        "resources.locations", "resources.max_instance_count", "resources.properties",
    ),
    "compute": _keys(
        "identity", "network_settings", "ssh_settings", "location", "enable_node_public_ip",
        "ssh_public_access_enabled", "setup_scripts", "custom_applications",
    ),
    "environment": _ENVIRONMENT,
    # A command component: Azure's schema has no compute, yet its 6a example sets one (Azure warns).
    "component": _keys(
        "compute", ("distribution.type", "ray"), "resources.shm_size", "resources.docker_args",
        "resources.locations", "resources.max_instance_count", "resources.properties",
    ),
    "model": (),
    "data": (),
    "automl": AUTOML_IGNORED,  # beside the job's own (an AutoML job is a job)
    # Azure's network isolation, identities and monitoring: cible's gateway listens where the server
    # says, replicas reach what the host reaches, and metrics are its own (`online-endpoint show`).
    "online-endpoint": _keys("identity", ("public_network_access", "disabled")),
    "online-deployment": _keys(
        ("app_insights_enabled", "true"), ("egress_public_network_access", "disabled"), "private_network_connection",
        "data_collector", "model_mount_path", "resources",
        # cible scales on in-flight requests per replica (target_concurrency), not on CPU.
        "scale_settings.target_utilization_percentage",
    ),
    # Read-only fields of `show`'s output, written back in a spec: the server sets them.
    "batch-endpoint": _keys("id", "scoring_uri", "provisioning_state"),
    "batch-deployment": _keys("id", "provisioning_state"),
}

# Keys of IGNORED_KEYS that some `type:` of the kind does act on: an attached machine logs in
# with its ssh_settings, and so does cible to a Slurm cluster's login host.
ACTED_ON: dict[tuple[str, str], tuple[str, ...]] = {("compute", "virtualmachine"): ("ssh_settings",),
                                                    ("compute", "slurm"): ("ssh_settings",)}

# Entities nested in another kind: an inline environment in a job gets the environment rules, and a
# sweep's trial (a command) the job's.
NESTED_KINDS: dict[str, dict[str, str]] = {"job": {"environment": "environment", "trial": "job"}}
# A pipeline step is a job; its component (and a pipeline job's own) gets the component rules.
NESTED_KINDS["job"]["component"] = "component"
NESTED_KINDS["component"] = {"environment": "environment"}
NESTED_KINDS["online-deployment"] = {"environment": "environment"}
NESTED_KINDS["batch-deployment"] = {"environment": "environment"}
# `settings:` keys of a pipeline that cible knows; others are tolerated (Azure's 3a example has
# `default_datestore`) and named.
PIPELINE_SETTINGS = ("default_compute", "default_datastore", "continue_on_step_failure", "force_rerun")


def ignored_present(kind: str, data: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """``(path, text)`` for every ignored key present in ``data``; text is what the warning names."""
    found: list[tuple[tuple[str, ...], str]] = []
    if not isinstance(data, dict):
        return found
    acted_on = ACTED_ON.get((kind, str(data.get("type", "")).lower()), ())
    for entry in IGNORED_KEYS.get(kind, ()):
        if entry.path[0] in acted_on:
            continue
        node: Any = data
        for part in entry.path:
            node = node.get(part, _ANY) if isinstance(node, dict) else _ANY
        if node is _ANY or node is None:
            continue
        if isinstance(node, dict) and node and set(node) <= ACTED_SUBKEYS.get(entry.path, frozenset()):
            continue
        if entry.only_if is not _ANY:
            if str(node).lower() != str(entry.only_if):
                continue
            text = f"{'.'.join(prefix + entry.path)}: {entry.only_if}"
        else:
            text = ".".join(prefix + entry.path)
        found.append((prefix + entry.path, text))
    for key, nested_kind in NESTED_KINDS.get(kind, {}).items():
        found += ignored_present(nested_kind, data.get(key), prefix + (key,))
    if kind in ("job", "component") and str(data.get("type", "")).lower() == "pipeline":
        found += _pipeline_ignored(data, prefix)
    if kind == "job" and str(data.get("type", "")).lower() == "automl":
        found += ignored_present("automl", data, prefix)
    return found


def _pipeline_ignored(data: dict, prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    """A pipeline's unknown settings, then what each step (a job) carries."""
    found: list[tuple[tuple[str, ...], str]] = []
    settings = data.get("settings")
    if isinstance(settings, dict):
        for key in settings:
            if key not in PIPELINE_SETTINGS:
                path = prefix + ("settings", str(key))
                found.append((path, ".".join(path)))
    jobs = data.get("jobs")
    if isinstance(jobs, dict):
        for name, step in jobs.items():
            found += ignored_present("job", step, prefix + ("jobs", str(name)))
    return found
