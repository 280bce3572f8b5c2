"""Request bodies of job submissions (command, sweep, pipeline) and component registrations.

The loader has already made every local path absolute and inlined local YAML files (`component:
./x.yml` is a mapping, `environment: file:` too). What is left needs the workspace: each local code
folder and data input is uploaded as a content-addressed snapshot and replaced by its
`cible://snapshots/...` URI, and each inline environment's conda file is sent as its content, so
the server never reads the submitter's disk. Registered components (`azureml:<name>:<version>`,
`@latest`) stay strings: the server resolves them.

The walk is the same for every node that can hold these fields: a job, a sweep's `trial`, a
pipeline step, a component (command or pipeline) and the steps of a pipeline component.
"""

from __future__ import annotations

import copy
import tempfile
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cible.core.errors import InvalidSpecError

if TYPE_CHECKING:
    from cible.client.http import WorkspaceClient

LITERAL_TYPES = frozenset({"number", "integer", "boolean", "string"})
# Where a node nests another node of the same shape.
NESTED = ("trial", "component")
AUTOML_DATA = ("training_data", "validation_data", "test_data")  # an AutoML job's data, uploaded as inputs are
# Fixed time stamps: a folder zipped for `additional_includes: [x.zip]` is the same bytes each
# time, so its snapshot (content-addressed) is too.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def submission_body(client: WorkspaceClient, job: Any, name: str | None = None) -> dict[str, Any]:
    """The body of `PUT /jobs/{name}` for a command, sweep or pipeline job (a loaded model, or a
    dict as the SDK takes one): named, with Azure's default experiment, every local path uploaded."""
    from cible.core.names import job_name
    from cible.core.naming import experiment_from_folder

    body = _job_dict(job)
    body["name"] = name or body.get("name") or job_name()
    # Azure's default experiment: the folder the submission was made from (made a valid name).
    body.setdefault("experiment_name", experiment_from_folder(Path.cwd().name))
    return upload_local_paths(client, body)


def component_body(client: WorkspaceClient, component: Any) -> dict[str, Any]:
    """The body of a component registration: its code (with its additional_includes) uploaded,
    its environment's conda file inlined; a pipeline component's steps likewise."""
    body = _spec_dict(component)
    return upload_local_paths(client, body)


def upload_local_paths(client: WorkspaceClient, body: dict[str, Any], uploads: Uploads | None = None) -> dict[str, Any]:
    """Walk a job or component body (JSON types, changed in place and returned)."""
    with ExitStack() as scratch:
        _walk(body, "", uploads or Uploads(client, scratch))
    return body


class Uploads:
    """The uploads of one body: each local tree once, however many nodes name it."""

    def __init__(self, client: WorkspaceClient, scratch: ExitStack | None = None) -> None:
        self._client = client
        self._scratch = scratch or ExitStack()
        self._done: dict[tuple, str] = {}

    def data(self, local: str, field: str) -> str:
        """A data input's local file or folder (as a command job's inputs have always been sent)."""
        from cible.sdk.uploads import upload_path  # pathspec: only when something is uploaded

        key = ("data", str(Path(local).expanduser().resolve()))
        if key not in self._done:
            self._done[key] = upload_path(self._client, local, field)
        return self._done[key]

    def code(self, code: str | None, includes: list[Any], field: str) -> str:
        """A code file or folder, with each additional include at its top level by basename, as
        azure-ai-ml builds a component's snapshot (a folder's files under `<its name>/`)."""
        from cible.sdk.uploads import upload_files, upload_path

        if not includes:
            key: tuple = ("code", str(Path(code).expanduser().resolve()))
            if key not in self._done:
                self._done[key] = upload_path(self._client, code, f"{field}code")
            return self._done[key]
        includes_field = f"{field}additional_includes"
        sources = [_include_source(item, i, includes_field) for i, item in enumerate(includes)]
        key = ("code", code and str(Path(code).expanduser().resolve()), tuple(str(s) for s in sources))
        if key not in self._done:
            files = self._code_files(code, f"{field}code")
            for i, source in enumerate(sources):
                self._add_include(files, source, f"{includes_field}[{i}]")
            self._done[key] = upload_files(self._client, files)
        return self._done[key]

    def _code_files(self, code: str | None, field: str) -> dict[str, Path]:
        from cible.sdk.uploads import walk_snapshot

        if code is None:  # a component with includes and no code: the snapshot is the includes
            return {}
        root = Path(code).expanduser()
        if not root.exists():
            raise InvalidSpecError(f"{field}: '{code}' does not exist", details={"field": field})
        return walk_snapshot(root)

    def _add_include(self, files: dict[str, Path], source: Path, field: str) -> None:
        from cible.sdk.uploads import walk_snapshot

        if not source.exists() and source.suffix == ".zip" and source.with_suffix("").is_dir():
            source = self._zipped(source.with_suffix(""), source.name)  # Azure zips `x` for `x.zip`
        elif not source.exists():
            raise InvalidSpecError(f"{field}: '{source}' does not exist", details={"field": field})
        top = source.name
        taken = sorted(rel for rel in files if rel == top or rel.startswith(top + "/"))
        if taken:  # Azure refuses an include that would land on the code's own files
            raise InvalidSpecError(
                f"{field}: '{source}' would be copied to '{top}' in the code snapshot, where the code already "
                f"has '{taken[0]}'; rename one of them", details={"field": field})
        walked = walk_snapshot(source)
        files.update(walked if source.is_file() else {f"{top}/{rel}": path for rel, path in walked.items()})

    def _zipped(self, folder: Path, name: str) -> Path:
        from cible.sdk.uploads import walk_snapshot

        target = Path(self._scratch.enter_context(tempfile.TemporaryDirectory(prefix="cible-include-"))) / name
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for rel, path in walk_snapshot(folder).items():  # the folder itself at the archive's root
                info = zipfile.ZipInfo(f"{folder.name}/{rel}", date_time=_ZIP_TIME)
                info.external_attr = (path.stat().st_mode & 0o777) << 16
                archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
        return target


def _include_source(item: Any, index: int, field: str) -> Path:
    if not isinstance(item, str) or not item:
        raise InvalidSpecError(
            f"{field}[{index}]: an additional include is a local file or folder path; Azure DevOps artifact "
            f"includes are not supported by cible (got {item!r})", details={"field": f"{field}[{index}]"})
    from cible.core.specs.azureml.refs import strip_file_prefix

    return Path(strip_file_prefix(item)).expanduser().resolve()


def _walk(node: dict[str, Any], field: str, uploads: Uploads) -> None:
    """One job, trial, step or component (`field` its place, `jobs.train.` ...), then what it nests."""
    from cible.core.specs.azureml import refs

    for hint in ("schema_", "$schema"):  # an editor hint, wherever a loaded file put one
        node.pop(hint, None)
    includes = node.pop("additional_includes", None) or []
    code = node.get("code")
    local = isinstance(code, str) and _is_local(code, f"{field}code")
    if includes and code is not None and not local:
        raise InvalidSpecError(f"{field}additional_includes: they are copied beside a local code folder, and "
                               f"{field}code is '{code}'; give the code as a local path",
                               details={"field": f"{field}additional_includes"})
    if local or includes:
        node["code"] = uploads.code(refs.strip_file_prefix(code) if local else None, list(includes), field)
    if isinstance(node.get("environment"), dict):
        node["environment"] = _inline_environment(node["environment"], f"{field}environment")
    data = [(f"{field}inputs.{key}.path", value) for key, value in (node.get("inputs") or {}).items()
            if isinstance(value, dict) and value.get("type") not in LITERAL_TYPES]
    if node.get("type") == "automl":  # an AutoML job's data is its own keys, not inputs
        data += [(f"{field}{key}.path", node[key]) for key in AUTOML_DATA if isinstance(node.get(key), dict)]
    for where, value in data:
        path = value.get("path")
        if isinstance(path, str) and "${{" not in path and _is_local(path, where):
            value["path"] = uploads.data(refs.strip_file_prefix(path), where)
    for key in NESTED:  # an inlined component, a sweep step's trial; a string is a registered one
        if isinstance(node.get(key), dict):
            _walk(node[key], f"{field}{key}.", uploads)
    jobs = node.get("jobs")
    if isinstance(jobs, dict):
        for step, child in jobs.items():
            if isinstance(child, dict):
                _walk(child, f"{field}jobs.{step}.", uploads)


def _is_local(value: str, field: str) -> bool:
    from cible.core.specs.azureml import refs

    try:
        return refs.classify_path(value) == "local"
    except InvalidSpecError as exc:  # an unknown URI scheme, named where it is
        raise InvalidSpecError(f"{field}: {exc.message}", details={"field": field}) from None


def _inline_environment(env: dict[str, Any], field: str) -> dict[str, Any]:
    from cible.sdk.assets import inline_conda_file

    env = {k: v for k, v in env.items() if k not in ("schema_", "$schema")}
    try:
        return inline_conda_file(env)
    except InvalidSpecError as exc:  # named where it is in this spec, not as in an environment file
        raise InvalidSpecError(f"{field}.{exc.message}", details={"field": f"{field}.conda_file"}) from None


def _job_dict(job: Any) -> dict[str, Any]:
    """A job as JSON types, validated and with its local files resolved as the loader does them."""
    if not isinstance(job, dict):
        return _spec_dict(job)
    spec_type = job.get("type")
    if spec_type is None or str(spec_type).lower() == "command":
        from cible.core.models import CommandJob

        # As the SDK has always taken a command job's dict: paths relative to the working folder.
        return _spec_dict(CommandJob.model_validate(job))
    from cible.core.specs.azureml.loader import load_spec_dict

    # A sweep's or pipeline's dict goes through the loader, which inlines local component files.
    loaded = load_spec_dict(copy.deepcopy(job), "job", base_dir=Path.cwd(), source="the job given")
    return _spec_dict(loaded.entity)


def _spec_dict(spec: Any) -> dict[str, Any]:
    if isinstance(spec, dict):
        return copy.deepcopy(spec)
    return spec.model_dump(mode="json", exclude_none=True)
