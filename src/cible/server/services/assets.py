"""Registered assets (environments, data, models): versioned, immutable, `@latest` by creation order.

Local content arrives as an uploaded snapshot and is copied into the workspace
datastore (`LocalUpload/<snapshot>/…`), so an asset never depends on the
uploader's disk; job outputs and datastore paths are referenced where they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from cible.core import naming
from cible.core.clock import Clock
from cible.core.environments import plan_environment
from cible.core.errors import ConflictError, InvalidRequestError, NotFoundError
from cible.core.safepaths import inside, under
from cible.core.specs.azureml import refs
from cible.core.specs.azureml.loader import load_spec_dict
from cible.launch.staging import materialise_snapshot
from cible.server.services.job_plans import SNAPSHOT_SCHEME, parse_snapshot_uri
from cible.server.services.paging import MAX_TOP, fetch, page
from cible.server.store.db import Store
from cible.server.store.rows import AssetRow
from cible.workspace import DEFAULT_DATASTORE, WorkspacePaths

# URL segment -> (loader kind, what users call it)
KINDS = {"environments": ("environment", "environment"), "data": ("data", "data asset"), "models": ("model", "model")}
LATEST = "latest"
# Folder assets Azure checks for their descriptor file.
REQUIRED_FILES = {("model", "mlflow_model"): "MLmodel", ("data", "mltable"): "MLTable"}


def datastore_uri(rel: str, datastore: str = DEFAULT_DATASTORE) -> str:
    return f"azureml://datastores/{datastore}/paths/{rel}"


class AssetService:
    def __init__(self, store: Store, paths: WorkspacePaths, clock: Clock, job_outputs) -> None:  # noqa: ANN001
        self.store = store
        self.paths = paths
        self.clock = clock
        # job_outputs(job_name) -> {output name: {"uri", "local_path"}} or None
        self.job_outputs = job_outputs

    # -- writes ------------------------------------------------------------
    def create(self, kind: str, name: str, version: str | None, body: dict[str, Any]) -> dict[str, Any]:
        spec_kind, label = self._kind(kind)
        naming.ASSET.check(name)
        if version is not None:
            naming.ASSET_VERSION.check(version, field="version")
        if body.get("name") not in (None, name):
            raise InvalidRequestError(f"name: the body says '{body['name']}' but the URL says '{name}'",
                                      details={"field": "name"})
        if version is not None and body.get("version") not in (None, version):
            raise InvalidRequestError(f"version: the body says '{body['version']}' but the URL says '{version}'",
                                      details={"field": "version"})
        data = {k: v for k, v in body.items() if k not in ("version", "creation_context", "id")}
        entity = load_spec_dict({**data, "name": name}, spec_kind, source="request body").entity
        spec = entity.model_dump(mode="json", exclude_none=True)
        spec.pop("version", None)
        if spec_kind == "environment":
            plan_environment(spec)  # a conda file that cannot be built is refused now, not at a job's Preparing
        else:
            spec["path"] = self._store_path(spec_kind, spec)
        with self.store.session() as session:
            version = version or body.get("version") or self._next_version(session, kind, name)
            naming.ASSET_VERSION.check(str(version), field="version")  # the body's, when the URL has none
            existing = session.get(AssetRow, (kind, name, str(version)))
            if existing is not None:
                if existing.spec == spec:  # idempotent re-registration
                    return _resource(existing)
                raise ConflictError(
                    f"{label} '{name}' version {version} already exists with different content; versions are "
                    "immutable: register a new version (omit version to get the next one)",
                    details={"name": name, "version": str(version)},
                )
        try:
            with self.store.session() as session:
                sequence = (session.scalar(select(func.max(AssetRow.sequence))) or 0) + 1
                row = AssetRow(kind=kind, name=name, version=str(version), spec=spec, created_at=self.clock.now(),
                               sequence=sequence)
                session.add(row)
                return _resource(row)
        except IntegrityError:
            raise ConflictError(f"{label} '{name}' version {version} was just registered by another request",
                                details={"name": name, "version": str(version)}) from None

    def _next_version(self, session, kind: str, name: str) -> str:  # noqa: ANN001
        versions = session.scalars(select(AssetRow.version).where(AssetRow.kind == kind, AssetRow.name == name))
        numbers = [int(v) for v in versions if v.isdigit()]
        return str(max(numbers, default=0) + 1)

    def _store_path(self, spec_kind: str, spec: dict[str, Any]) -> str:
        """Where the asset's content lives, as a URI the workspace can resolve."""
        uri = spec["path"]
        if uri.startswith(SNAPSHOT_SCHEME):
            snapshot, subpath = parse_snapshot_uri(uri)
            root = under(self.paths.datastore(), "LocalUpload", snapshot)
            if not root.exists():
                tmp = root.with_name(root.name + ".part")
                materialise_snapshot(self.paths.blob_root, snapshot, tmp)
                tmp.rename(root)
            uri = datastore_uri(f"LocalUpload/{snapshot}/{subpath}".rstrip("/"))
        kind = refs.classify_path(uri)
        if kind == "job_output":
            uri = self._job_output_uri(uri)
            kind = "datastore"
        if kind == "datastore":
            datastore, rel = refs.parse_datastore_uri(uri)
            uri = datastore_uri(rel.rstrip("/"), datastore)  # stored normalised: `a/../b` is `b`
            local = self.local_path(uri)
            if not local.exists():
                raise NotFoundError(f"path: {uri} does not exist in the workspace datastore", details={"field": "path"})
            marker = REQUIRED_FILES.get((spec_kind, spec.get("type")))
            if marker and not (local / marker).is_file():
                raise InvalidRequestError(f"path: a {spec['type']} needs a file named {marker} at the top of {uri}",
                                          details={"field": "path"})
        elif kind == "local":
            raise InvalidRequestError("path: upload local content first (the cible CLI and SDK do this for you)",
                                      details={"field": "path"})
        return uri

    def _job_output_uri(self, uri: str) -> str:
        job, output, rel = refs.parse_job_output_uri(uri)
        outputs = self.job_outputs(job)
        if outputs is None:
            raise NotFoundError(f"path: job '{job}' does not exist", details={"field": "path"})
        if output not in outputs:
            raise NotFoundError(f"path: job '{job}' has no output '{output}' (its outputs: "
                                f"{', '.join(outputs) or 'none'})", details={"field": "path"})
        base = outputs[output]["uri"].rstrip("/")
        return f"{base}/{rel}".rstrip("/") if rel else base

    def local_path(self, uri: str) -> Path:
        datastore, rel = refs.parse_datastore_uri(uri)
        if datastore != DEFAULT_DATASTORE:
            raise NotFoundError(f"datastore '{datastore}' does not exist in this workspace", details={"field": "path"})
        return inside(self.paths.datastore(datastore), rel)

    # -- reads ---------------------------------------------------------------
    def get(self, kind: str, name: str, version: str = LATEST) -> dict[str, Any]:
        spec_kind, label = self._kind(kind)
        with self.store.session() as session:
            query = select(AssetRow).where(AssetRow.kind == kind, AssetRow.name == name)
            if version == LATEST:
                row = session.scalars(query.order_by(AssetRow.sequence.desc()).limit(1)).first()
            else:
                row = session.scalars(query.where(AssetRow.version == str(version))).first()
            if row is None:
                known = session.scalars(select(AssetRow.version).where(AssetRow.kind == kind, AssetRow.name == name))
                versions = ", ".join(known) or "none"
                raise NotFoundError(f"{label} '{name}' version {version} does not exist (versions: {versions})",
                                    details={"name": name, "version": version})
            return _resource(row)

    def list(self, kind: str, name: str | None = None, *, skip: int = 0, top: int = MAX_TOP) -> dict[str, Any]:
        """A page of `name`'s versions, newest first, or of the latest version of every asset of this
        kind by name."""
        self._kind(kind)
        newest_first = (AssetRow.sequence.desc(), AssetRow.version.desc())
        if name:
            query = select(AssetRow).where(AssetRow.kind == kind, AssetRow.name == name).order_by(*newest_first)
        else:  # each name's newest row, picked in SQL so only the page's rows are read
            ranked = select(AssetRow, func.row_number().over(partition_by=AssetRow.name, order_by=newest_first)
                            .label("rank")).where(AssetRow.kind == kind).subquery()
            latest = aliased(AssetRow, ranked)
            query = select(latest).where(ranked.c.rank == 1).order_by(latest.name)
        with self.store.session() as session:
            rows, total = fetch(session, query, skip, top)
            return page([_resource(r) for r in rows], total, skip)

    def _kind(self, kind: str) -> tuple[str, str]:
        if kind not in KINDS:
            raise NotFoundError(f"no such asset kind '{kind}'; kinds: {', '.join(KINDS)}")
        return KINDS[kind]


def _resource(row: AssetRow) -> dict[str, Any]:
    return {**row.spec, "name": row.name, "version": row.version,
            "creation_context": {"created_at": row.created_at.isoformat()}}
