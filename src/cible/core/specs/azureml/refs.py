"""Parsing of Azure ML references and data URIs (Azure reference §1.2-1.3).

Pure string handling: nothing here looks anything up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cible.core.errors import InvalidSpecError
from cible.core.safepaths import normalise

ASSET_TYPES = ("environments", "models", "data", "components")


@dataclass(frozen=True)
class AssetRef:
    """A reference to a versioned asset: ``azureml:name:1``, ``azureml:name@latest``, registry URIs."""

    name: str
    version: str | None = None
    label: str | None = None
    registry: str | None = None
    asset_type: str | None = None  # one of ASSET_TYPES when the URI says which


# azureml://registries/<r>/<type>/<name>/(versions/<v>|labels/<l>)
_REGISTRY_REF = re.compile(
    r"^azureml://registries/(?P<registry>[^/]+)/(?P<type>[^/]+)/(?P<name>[^/]+)"
    r"(?:/(?:versions/(?P<version>[^/]+)|labels/(?P<label>[^/]+)))?/?$",
    re.IGNORECASE,
)
# azureml:/subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.MachineLearningServices/
#   workspaces/<ws>/<type>/<name>[/versions/<v>|/labels/<l>]
_ARM_REF = re.compile(
    r"^(?:azureml:)?/subscriptions/[^/]+/resourcegroups/[^/]+/providers/[^/]+/workspaces/[^/]+"
    r"/(?P<type>[^/]+)/(?P<name>[^/]+)(?:/(?:versions/(?P<version>[^/]+)|labels/(?P<label>[^/]+)))?/?$",
    re.IGNORECASE,
)
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def _checked_name(name: str, value: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidSpecError(f"{value!r}: {name!r} is not a valid asset name")
    return name


def parse_asset_ref(value: str) -> AssetRef | None:
    """Parse an asset reference; None when ``value`` is not one (a path, a URI, a datastore ...).

    A string that starts like a reference but is malformed raises InvalidSpecError.
    """
    if not isinstance(value, str) or not value.lower().startswith("azureml:"):
        return None
    if value.lower().startswith("azureml://"):
        match = _REGISTRY_REF.fullmatch(value)
        if match:
            return AssetRef(
                name=_checked_name(match["name"], value), version=match["version"], label=match["label"],
                registry=match["registry"], asset_type=match["type"].lower(),
            )
        if value.lower().startswith("azureml://registries/"):
            raise InvalidSpecError(
                f"{value!r} is not a registry reference like "
                "azureml://registries/<registry>/environments/<name>/versions/<version>"
            )
        return None  # datastore, job output or other storage URI
    body = value[len("azureml:"):]
    if body.startswith("/"):
        match = _ARM_REF.fullmatch(value)
        if not match:
            raise InvalidSpecError(f"{value!r} is not a valid ARM id reference")
        asset_type = match["type"].lower()
        if asset_type not in ASSET_TYPES:
            return None  # e.g. computes/<name>: a resource, not an asset
        return AssetRef(
            name=_checked_name(match["name"], value), version=match["version"], label=match["label"],
            asset_type=asset_type,
        )
    if "@" in body:
        name, _, label = body.partition("@")
        if not label:
            raise InvalidSpecError(f"{value!r}: empty label after '@'")
        return AssetRef(name=_checked_name(name, value), label=label)
    name, sep, version = body.partition(":")
    if sep and not version:
        raise InvalidSpecError(f"{value!r}: empty version after ':'")
    if ":" in version:
        raise InvalidSpecError(f"{value!r} is not a reference like azureml:<name>:<version>")
    return AssetRef(name=_checked_name(name, value), version=version or None)


_COMPUTE_ARM = re.compile(r"^(?:azureml:)?/subscriptions/.+/computes/(?P<name>[^/]+)/?$", re.IGNORECASE)
_COMPUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


def parse_compute_ref(value: str) -> str:
    """Compute name from ``azureml:cpu-cluster``, ``cpu-cluster`` or an ARM id."""
    text = value.strip() if isinstance(value, str) else ""
    match = _COMPUTE_ARM.fullmatch(text)
    if match:
        name = match["name"]
    else:
        name = text[len("azureml:"):] if text.lower().startswith("azureml:") else text
    if not _COMPUTE_NAME.fullmatch(name):
        raise InvalidSpecError(
            f"{value!r} is not a compute reference (expected <name>, azureml:<name> or an ARM id ending in "
            "/computes/<name>)"
        )
    return name


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+)://")


def classify_path(value: str) -> str:
    """Kind of a ``path:`` value: local, http, wasbs, abfss, adl, datastore, job_output, asset, runs."""
    lowered = value.lower()
    if lowered.startswith(("http://", "https://")):
        return "http"
    if lowered.startswith(("wasbs://", "wasb://")):
        return "wasbs"
    if lowered.startswith(("abfss://", "abfs://")):
        return "abfss"
    if lowered.startswith("adl://"):
        return "adl"
    if lowered.startswith("runs:/"):
        return "runs"
    if lowered.startswith("azureml://jobs/"):
        return "job_output"
    if lowered.startswith("azureml://datastores/") or (
        lowered.startswith("azureml://subscriptions/") and "/datastores/" in lowered
    ):
        return "datastore"
    if lowered.startswith("azureml:"):
        return "asset"
    if lowered.startswith("file:"):
        return "local"
    if lowered.startswith("cible://snapshots/"):
        return "snapshot"  # code or local data already uploaded to the workspace
    match = _SCHEME.match(value)
    if match:
        raise InvalidSpecError(f"{value!r}: unsupported URI scheme {match.group(1)!r}")
    return "local"


def strip_file_prefix(value: str) -> str:
    """``file:./x`` -> ``./x``; ``file:///abs`` -> ``/abs``."""
    if value.lower().startswith("file://"):
        return value[len("file://"):]
    if value.lower().startswith("file:"):
        return value[len("file:"):]
    return value


_WASBS = re.compile(r"^wasbs?://(?P<container>[^@/]+)@(?P<host>[^/]+)(?:/(?P<path>.*))?$", re.IGNORECASE)


def wasbs_to_https(uri: str) -> str:
    """``wasbs://C@A.blob.core.windows.net/P`` -> ``https://A.blob.core.windows.net/C/P`` (same public object)."""
    match = _WASBS.fullmatch(uri)
    if not match:
        raise InvalidSpecError(f"{uri!r} is not a wasbs URI like wasbs://<container>@<account>.blob.core.windows.net/<path>")
    url = f"https://{match['host']}/{match['container']}"
    return f"{url}/{match['path']}" if match["path"] else url


_DATASTORE = re.compile(
    r"^azureml://(?:subscriptions/[^/]+/resourcegroups/[^/]+/(?:providers/[^/]+/)?workspaces/[^/]+/)?"
    r"datastores/(?P<ds>[^/]+)/paths(?:/(?P<path>.*))?$",
    re.IGNORECASE,
)


def parse_datastore_uri(uri: str, *, field: str = "path") -> tuple[str, str]:
    """``azureml://datastores/<ds>/paths/<p>`` (or the long subscriptions/... form) -> ``(ds, p)``,
    ``p`` normalised (``a/../b/`` -> ``b/``, no leading ``/``); a ``p`` that leads out of the
    datastore is an InvalidRequestError naming ``field``."""
    match = _DATASTORE.fullmatch(uri)
    if not match:
        raise InvalidSpecError(f"{uri!r} is not a datastore URI like azureml://datastores/<datastore>/paths/<path>")
    return match["ds"], normalise(match["path"] or "", field=field)


_JOB_OUTPUT = re.compile(
    r"^azureml://jobs/(?P<job>[^/]+)/outputs/(?P<out>[^/]+)(?:/paths(?:/(?P<path>.*))?)?/?$", re.IGNORECASE
)


def parse_job_output_uri(uri: str, *, field: str = "path") -> tuple[str, str, str]:
    """``azureml://jobs/<job>/outputs/<out>[/paths/<p>]`` -> ``(job, out, p or "")``, ``p``
    normalised and kept inside the output as in `parse_datastore_uri`."""
    match = _JOB_OUTPUT.fullmatch(uri)
    if not match:
        raise InvalidSpecError(
            f"{uri!r} is not a job output URI like azureml://jobs/<job>/outputs/<output>/paths/<path>"
        )
    return match["job"], match["out"], normalise(match["path"] or "", field=field, within="the job's output")
