"""Registered assets (environments, data, models, components): versioned, immutable, `@latest` by
creation order.

Local content arrives as an uploaded snapshot and is copied into the workspace
datastore (`LocalUpload/<snapshot>/…`), so an asset never depends on the
uploader's disk; job outputs and datastore paths are referenced where they are.
A component's code stays the uploaded snapshot its `code` names (as a job's does).
"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, not_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from cible.core import naming
from cible.core.clock import Clock
from cible.core.environments import plan_environment, resolve_curated
from cible.core.errors import ConflictError, InvalidRequestError, InvalidSpecError, NotFoundError
from cible.core.safepaths import inside, stays_under, under
from cible.core.specs.azureml import refs
from cible.core.specs.azureml.loader import load_spec_dict
from cible.launch.staging import materialise_snapshot
from cible.server.services.job_plans import SNAPSHOT_SCHEME, parse_snapshot_uri
from cible.server.services.paging import MAX_TOP, fetch, page, slice_page
from cible.server.services.views import ACTIVE, ALL, ARCHIVED, list_view
from cible.server.store.db import Store
from cible.server.store.rows import ArchivedAssetRow, AssetRow
from cible.workspace import DEFAULT_DATASTORE, WorkspacePaths

# URL segment -> (loader kind, what users call it)
KINDS = {"environments": ("environment", "environment"), "data": ("data", "data asset"), "models": ("model", "model"),
         "components": ("component", "component")}
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
        # Text, as Azure keeps it: YAML's `version: 1` is the URL's `1` (and `01` stays `01`).
        body_version = None if body.get("version") is None else str(body["version"])
        if version is not None and body_version not in (None, version):
            raise InvalidRequestError(f"version: the body says '{body['version']}' but the URL says '{version}'",
                                      details={"field": "version"})
        data = {k: v for k, v in body.items() if k not in ("version", "creation_context", "id")}
        entity = load_spec_dict({**data, "name": name}, spec_kind, source="request body").entity
        spec = entity.model_dump(mode="json", exclude_none=True)
        spec.pop("version", None)
        if spec_kind == "environment":
            plan_environment(spec)  # a conda file that cannot be built is refused now, not at a job's Preparing
        elif spec_kind == "component":
            self._check_component(spec, "")  # what a job using it will need, refused now
        else:
            spec["path"] = self._store_path(spec_kind, spec)
        with self.store.session() as session:
            version = version or body_version or self._next_version(session, kind, name)
            naming.ASSET_VERSION.check(str(version), field="version")  # the body's, when the URL has none
            existing = session.get(AssetRow, (kind, name, str(version)))
            if existing is not None:
                if existing.spec == spec:  # idempotent re-registration
                    return _resource(existing, bool(_archived_names(session, kind, [name])))
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
                # Under an archived asset a new version is archived with it, as on Azure.
                return _resource(row, bool(_archived_names(session, kind, [name])))
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

    # -- components ------------------------------------------------------------
    def component_spec(self, name: str, version: str = LATEST) -> dict[str, Any]:
        """A registered component's spec, `name` and `version` in it, for pipelines that name it
        (`azureml:<name>:<version>`, `azureml:<name>@latest`: pass the version or `latest`)."""
        found = self.get("components", name, version)
        return {k: v for k, v in found.items() if k not in ("is_archived", "creation_context")}

    def _check_component(self, spec: dict[str, Any], field: str) -> None:
        """A component (or a pipeline component's step, `field` its place: `jobs.train.`) as a job
        using it needs it: code uploaded, environment buildable or registered, data inputs uploaded,
        the components it names registered."""
        if spec.get("code") is not None:
            self._check_snapshot(f"{field}code", spec["code"])
        if spec.get("environment") is not None:
            self._check_environment(f"{field}environment", spec["environment"])
        for key, value in (spec.get("inputs") or {}).items():
            path = value.get("path") if isinstance(value, dict) else None
            if isinstance(path, str) and "${{" not in path and refs.classify_path(path) in ("local", "snapshot"):
                self._check_snapshot(f"{field}inputs.{key}.path", path)
        for key in ("component", "trial"):
            nested = spec.get(key)
            if isinstance(nested, dict):
                self._check_component(nested, f"{field}{key}.")
            elif isinstance(nested, str):
                self._check_component_ref(f"{field}{key}", nested)
        for step, child in (spec.get("jobs") or {}).items():
            if isinstance(child, dict):
                self._check_component(child, f"{field}jobs.{step}.")

    def _check_snapshot(self, field: str, uri: str) -> None:
        if not uri.startswith(SNAPSHOT_SCHEME):
            raise InvalidRequestError(f"{field}: '{uri}' is a local path; upload it first (the cible CLI and SDK do "
                                      "this for you) and pass the cible://snapshots/... URI the upload returns",
                                      details={"field": field})
        snapshot, _ = parse_snapshot_uri(uri, field=field)
        if not under(self.paths.blob_root, snapshot[:2], snapshot).is_file():
            raise NotFoundError(f"{field}: snapshot {snapshot} was not uploaded to this workspace",
                                details={"field": field})

    def _check_environment(self, field: str, env: Any) -> None:
        registered = None
        if isinstance(env, str) and resolve_curated(env) is None:
            ref = refs.parse_asset_ref(env)
            if ref is not None and not ref.registry:
                try:
                    registered = self.get("environments", ref.name, ref.version or ref.label or LATEST)
                except NotFoundError as exc:
                    raise NotFoundError(f"{field}: {exc.message}", details={"field": field}) from None
        try:
            plan_environment(env, registered=registered)
        except InvalidSpecError as exc:  # the planner names `environment`; say where in the component
            message = exc.message.removeprefix("environment")
            message = message if message.startswith((":", ".", " (")) else f": {message}"
            raise InvalidSpecError(f"{field}{message}", details={"field": field}) from None

    def _check_component_ref(self, field: str, value: str) -> None:
        try:
            ref = refs.parse_asset_ref(value)
        except InvalidSpecError as exc:
            raise InvalidSpecError(f"{field}: {exc.message}", details={"field": field}) from None
        if ref is None:
            raise InvalidRequestError(f"{field}: '{value}' is a local file; the cible CLI and SDK inline it (send "
                                      "the component itself, or name a registered one: azureml:<name>:<version>)",
                                      details={"field": field})
        if ref.registry:
            raise NotFoundError(f"{field}: '{value}' is in registry '{ref.registry}'; this workspace has no "
                                "registries: register the component here (`cible component create`)",
                                details={"field": field})
        try:
            self.get("components", ref.name, ref.version or ref.label or LATEST)
        except NotFoundError as exc:
            raise NotFoundError(f"{field}: {exc.message}", details={"field": field}) from None

    def local_path(self, uri: str) -> Path:
        datastore, rel = refs.parse_datastore_uri(uri)
        if datastore != DEFAULT_DATASTORE:
            raise NotFoundError(f"datastore '{datastore}' does not exist in this workspace", details={"field": "path"})
        return inside(self.paths.datastore(datastore), rel)

    # -- reads ---------------------------------------------------------------
    def get(self, kind: str, name: str, version: str = LATEST) -> dict[str, Any]:
        """One version; `latest` is the newest version not archived (Azure's label), an explicit
        version is answered archived or not."""
        _, label = self._kind(kind)
        with self.store.session() as session:
            row = self._version_row(session, kind, label, name, version)
            return _resource(row, bool(_archived_names(session, kind, [name])))

    def _version_row(self, session: Session, kind: str, label: str, name: str, version: str) -> AssetRow:
        query = select(AssetRow).where(AssetRow.kind == kind, AssetRow.name == name)
        if version == LATEST:
            query = query.where(not_(_archived(AssetRow))).order_by(AssetRow.sequence.desc()).limit(1)
        else:
            query = query.where(AssetRow.version == str(version))
        row = session.scalars(query).first()
        if row is not None:
            return row
        known = session.scalars(select(AssetRow.version).where(AssetRow.kind == kind, AssetRow.name == name)
                                .order_by(AssetRow.sequence)).all()
        details = {"name": name, "version": version}
        if version == LATEST and known:
            whole = bool(_archived_names(session, kind, [name]))
            why = f"the whole {label} is archived" if whole else "every version of it is archived"
            fix = (f"restore it (`cible {KINDS[kind][0]} restore -n {name}`)" if whole else
                   f"restore one (`cible {KINDS[kind][0]} restore -n {name} --version <v>`)")
            raise NotFoundError(f"{label} '{name}' has no version for 'latest': {why} (versions: {', '.join(known)}); "
                                f"{fix}, or name a version explicitly", details=details)
        if not known:  # no such name: a typo, most often
            if kind == "environments" and (curated := resolve_curated(name)) is not None:
                raise NotFoundError(f"environment '{name}' is curated (Azure's registry, not this workspace): jobs "
                                    f"name it as azureml:{curated['name']}@latest; `cible environment show -n {name} "
                                    "--registry-name azureml` shows it", details=details)
            names = session.scalars(select(AssetRow.name).where(AssetRow.kind == kind).distinct()).all()
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.75)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise NotFoundError(f"{label} '{name}' does not exist in this workspace{hint} (`cible "
                                f"{KINDS[kind][0]} list` lists them)", details=details)
        raise NotFoundError(f"{label} '{name}' version {version} does not exist (versions: {', '.join(known)})",
                            details=details)

    def list(self, kind: str, name: str | None = None, *, skip: int = 0, top: int = MAX_TOP,
             include_archived: bool = False, archived_only: bool = False) -> dict[str, Any]:
        """A page of `name`'s versions, newest first, or of the latest version of every asset of this
        kind by name. Archived versions are left out unless asked for (Azure's list view types)."""
        self._kind(kind)
        view = list_view(include_archived, archived_only)
        hidden = _archived(AssetRow)
        newest_first = (AssetRow.sequence.desc(), AssetRow.version.desc())
        if name:
            query = select(AssetRow).where(AssetRow.kind == kind, AssetRow.name == name)
            if view != ALL:
                query = query.where(hidden if view == ARCHIVED else not_(hidden))
            query = query.order_by(*newest_first)
        else:  # each name's newest row, picked in SQL so only the page's rows are read
            candidates = select(AssetRow, func.row_number().over(partition_by=AssetRow.name, order_by=newest_first)
                                .label("rank")).where(AssetRow.kind == kind)
            if view == ACTIVE:  # each name by its newest active version: a name with none is not listed
                candidates = candidates.where(not_(hidden))
            elif view == ARCHIVED:  # the names left out of the active view, by their newest version
                other = aliased(AssetRow)
                active = select(other.name).where(other.kind == kind, not_(_archived(other)))
                candidates = candidates.where(AssetRow.name.not_in(active))
            ranked = candidates.subquery()
            latest = aliased(AssetRow, ranked)
            query = select(latest).where(ranked.c.rank == 1).order_by(latest.name)
        with self.store.session() as session:
            rows, total = fetch(session, query, skip, top)
            whole = _archived_names(session, kind, {r.name for r in rows})
            return page([_resource(r, r.name in whole) for r in rows], total, skip)

    def version_counts(self, kind: str, names: Iterable[str], *, include_archived: bool = False,
                       archived_only: bool = False) -> dict[str, int]:
        """How many versions each of `names` has, in one grouped query: for each name, the `count` that
        `list(kind, name, ...)` with the same archive flags answers (a name with none is 0)."""
        self._kind(kind)
        names = sorted(set(names))
        if not names:
            return {}
        view = list_view(include_archived, archived_only)
        hidden = _archived(AssetRow)
        query = (select(AssetRow.name, func.count()).where(AssetRow.kind == kind, AssetRow.name.in_(names))
                 .group_by(AssetRow.name))
        if view != ALL:
            query = query.where(hidden if view == ARCHIVED else not_(hidden))
        with self.store.session() as session:
            counted = {name: int(count) for name, count in session.execute(query)}
        return {name: counted.get(name, 0) for name in names}

    # -- archive / restore ---------------------------------------------------
    def set_archived(self, kind: str, name: str, version: str | None, archived: bool) -> dict[str, Any]:
        """Archive (or restore) one version, or with no version the whole asset, as `az ml <kind>
        archive|restore`. Idempotent: archiving what is archived changes nothing."""
        spec_kind, label = self._kind(kind)
        naming.ASSET.check(name)
        if version is not None and version != LATEST:
            naming.ASSET_VERSION.check(version, field="version")
        try:
            with self.store.session() as session:
                whole = session.get(ArchivedAssetRow, (kind, name))
                if version is None:
                    return self._set_whole(session, kind, label, name, whole, archived)
                if version == LATEST and not archived:
                    self._refuse_restore_by_label(session, kind, spec_kind, label, name)
                row = self._version_row(session, kind, label, name, version)
                if not archived and whole is not None:
                    raise ConflictError(
                        f"{label} '{name}' is archived as a whole, so its versions cannot be restored one by one; "
                        f"restore the whole {label}: `cible {spec_kind} restore -n {name}` (without --version)",
                        details={"name": name, "version": row.version})
                row.archived = archived
                return _resource(row, whole is not None)
        except IntegrityError:  # another request archived the whole asset at the same moment: as asked
            with self.store.session() as session:
                return self._set_whole(session, kind, label, name, session.get(ArchivedAssetRow, (kind, name)),
                                       archived)

    def _refuse_restore_by_label(self, session: Session, kind: str, spec_kind: str, label: str, name: str) -> None:
        """`latest` is the newest version not archived (as azure-ai-ml resolves it), so it never names
        an archived one: a restore by it would change nothing or find nothing. Ask for the version."""
        known = session.execute(select(AssetRow.version, _archived(AssetRow)).where(
            AssetRow.kind == kind, AssetRow.name == name).order_by(AssetRow.sequence.desc())).all()
        if not known:
            raise NotFoundError(f"{label} '{name}' does not exist in this workspace", details={"name": name})
        archived = [version for version, hidden in known if hidden]
        raise InvalidRequestError(
            f"restore {label} '{name}' by its version, not by the label 'latest' (the newest version not "
            f"archived, so never an archived one): `cible {spec_kind} restore -n {name} --version <v>` "
            f"(archived versions: {', '.join(archived) or 'none'})",
            details={"name": name, "field": "label", "archived_versions": archived})

    def _set_whole(self, session: Session, kind: str, label: str, name: str, whole: ArchivedAssetRow | None,
                   archived: bool) -> dict[str, Any]:
        count = session.scalar(select(func.count()).select_from(AssetRow)
                               .where(AssetRow.kind == kind, AssetRow.name == name)) or 0
        if not count:
            raise NotFoundError(f"{label} '{name}' does not exist in this workspace", details={"name": name})
        if archived and whole is None:
            session.add(ArchivedAssetRow(kind=kind, name=name, archived_at=self.clock.now()))
        elif not archived and whole is not None:
            # A statement, not session.delete: a concurrent restore that deleted it first is no error.
            session.execute(delete(ArchivedAssetRow).where(ArchivedAssetRow.kind == kind,
                                                           ArchivedAssetRow.name == name))
        return {"name": name, "is_archived": archived, "version_count": count}

    # -- model files -----------------------------------------------------------
    def model_files(self, name: str, version: str, *, skip: int = 0, top: int = MAX_TOP) -> dict[str, Any]:
        """A page of a model version's files, as `az ml model download` lays them out:
        `<name>/<basename of its path>[/...]`, in a stable order."""
        prefix, root = self._model_root(name, version)
        if root.is_file():
            files = [(prefix, root)]
        else:
            files = [(f"{prefix}/{rel}", path) for path in sorted(root.rglob("*")) if path.is_file()
                     for rel in [path.relative_to(root).as_posix()] if stays_under(root, rel)]
        listing = slice_page(files, skip, top)  # only the page's files are stat'ed
        listing["value"] = [{"path": listed, "size": path.stat().st_size} for listed, path in listing["value"]]
        return listing

    def model_file(self, name: str, version: str, path: str) -> Path:
        prefix, root = self._model_root(name, version)
        candidate = None
        if root.is_file():
            candidate = root if path == prefix else None
        elif path.startswith(prefix + "/"):  # a `..`, a NUL or a link out of the folder is a 400, never a file
            candidate = under(root, path[len(prefix) + 1:], field="path")
        if candidate is None or not candidate.is_file():
            raise NotFoundError(f"model '{name}' version {version} has no file '{path}' (its files are under "
                                f"'{prefix}')", details={"path": path})
        return candidate

    def _model_root(self, name: str, version: str) -> tuple[str, Path]:
        """The download prefix of a model version's files and where they are."""
        model = self.get("models", name, version)
        if refs.classify_path(model["path"]) != "datastore":  # registered by reference (https, runs:/, wasbs)
            raise InvalidRequestError(
                f"model '{name}' version {model['version']} is at {model['path']}, outside the workspace's "
                "datastore, so cible has no files of it to download; fetch it from there",
                details={"name": name, "version": model["version"], "path": model["path"]})
        _, rel = refs.parse_datastore_uri(model["path"])
        root = self.local_path(model["path"])
        if not root.exists():
            raise NotFoundError(f"model '{name}' version {model['version']}: its files at {model['path']} are no "
                                "longer in the datastore; register the model again from its source",
                                details={"name": name, "version": model["version"]})
        base = posixpath.basename(rel.rstrip("/"))
        return (f"{name}/{base}" if base else name), root

    def _kind(self, kind: str) -> tuple[str, str]:
        if kind not in KINDS:
            raise NotFoundError(f"no such asset kind '{kind}'; kinds: {', '.join(KINDS)}")
        return KINDS[kind]


def _archived(row: type[AssetRow]) -> ColumnElement[bool]:
    """Whether a version is archived: itself, or with its whole asset."""
    whole = exists().where(ArchivedAssetRow.kind == row.kind, ArchivedAssetRow.name == row.name)
    return or_(row.archived, whole)


def _archived_names(session: Session, kind: str, names: Iterable[str]) -> set[str]:
    """Which of `names` are archived as a whole."""
    names = list(names)
    if not names:
        return set()
    return set(session.scalars(select(ArchivedAssetRow.name).where(ArchivedAssetRow.kind == kind,
                                                                   ArchivedAssetRow.name.in_(names))))



def _resource(row: AssetRow, whole_archived: bool) -> dict[str, Any]:
    return {**row.spec, "name": row.name, "version": row.version, "is_archived": bool(row.archived or whole_archived),
            "creation_context": {"created_at": row.created_at.isoformat()}}
