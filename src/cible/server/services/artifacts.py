"""A job's logs, default artifacts and named outputs, laid out as `az ml job download` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cible.core.errors import CibleError, NotFoundError
from cible.core.safepaths import inside, stays_under, under
from cible.core.specs.azureml import refs
from cible.runfiles import read_state
from cible.server.services.jobs import JobService
from cible.server.services.paging import MAX_TOP, slice_page
from cible.server.tracking import run_metrics
from cible.workspace import WorkspacePaths

ARTIFACTS = "artifacts"
NAMED_OUTPUTS = "named-outputs"


class ArtifactService:
    def __init__(self, jobs: JobService, paths: WorkspacePaths, run_of=None) -> None:  # noqa: ANN001
        self.jobs = jobs
        self.paths = paths
        # run_of(job, experiment) -> the job's MLflow run id, or None (where the run folder does not say)
        self.run_of = run_of or (lambda job, experiment: (read_state(paths.run_dir(job)) or {}).get("mlflow_run_id"))

    def read_log(self, name: str, offset: int, limit: int) -> tuple[str, bytes, int]:
        status, _ = self.jobs.run_handle(name)
        log = self.paths.run_dir(name) / ARTIFACTS / "user_logs" / "std_log.txt"
        try:
            with open(log, "rb") as fh:
                fh.seek(offset)
                data = fh.read(limit)
        except FileNotFoundError:
            data = b""
        return status, data, offset + len(data)

    def tracking_summary(self, job: dict[str, Any], tracking) -> dict[str, Any]:  # noqa: ANN001
        """The job's MLflow run: latest metrics and params (empty when it has no run yet)."""
        if tracking is None or job.get("type") in ("sweep", "pipeline", "automl"):  # their runs are their children's
            return {}
        run_id = None
        try:
            run_id = self.run_of(job["name"], job["experiment_name"])
            if not run_id:
                return {}
            run = run_metrics(tracking, run_id, timeout=5)
        except CibleError as exc:  # the job is still shown when MLflow is down
            return {**({"mlflow_run_id": run_id} if run_id else {}), "metrics_unavailable": exc.message}
        if run is None:
            return {"mlflow_run_id": run_id}
        return {"mlflow_run_id": run_id, "metrics": run["metrics"], "params": run["params"]}

    def _roots(self, name: str) -> dict[str, Path]:
        """Download prefix -> where those files live."""
        _, run = self.jobs.run_handle(name)
        roots = {ARTIFACTS: self.paths.run_dir(name) / ARTIFACTS}
        for output, spec in run.plan.get("outputs", {}).items():
            root = self._output_root(spec)
            if root is not None:
                roots[f"{NAMED_OUTPUTS}/{output}"] = root
        return roots

    def _output_root(self, spec: dict[str, Any]) -> Path | None:
        """Where an output's files are, worked out again from its URI, so that a plan stored before
        paths were checked (`paths/../../etc`) can never serve a file outside the datastore."""
        try:
            datastore, rel = refs.parse_datastore_uri(spec["uri"])
            return inside(self.paths.datastore(datastore), rel)
        except CibleError:
            return None

    def list_files(self, name: str, *, output_name: str | None, everything: bool, skip: int = 0,
                   top: int = MAX_TOP) -> dict[str, Any]:
        """A page of the job's files, in a stable order (each root's files sorted by path)."""
        roots = self._roots(name)
        if output_name and output_name != "default":
            key = f"{NAMED_OUTPUTS}/{output_name}"
            if key not in roots:
                known = ", ".join(k.split("/", 1)[1] for k in roots if k.startswith(NAMED_OUTPUTS)) or "none"
                raise NotFoundError(f"job '{name}' has no output '{output_name}' (its outputs: {known})")
            roots = {key: roots[key]}
        elif not everything:
            roots = {ARTIFACTS: roots[ARTIFACTS]}
        files = []
        for prefix, root in roots.items():
            candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for path in candidates:
                rel = path.name if path == root else path.relative_to(root).as_posix()
                if path != root and not stays_under(root, rel):
                    continue  # a link to a file elsewhere: neither listed nor served
                files.append((f"{prefix}/{rel}", path))
        listing = slice_page(files, skip, top)  # only the page's files are stat'ed
        listing["value"] = [{"path": listed, "size": path.stat().st_size} for listed, path in listing["value"]]
        return listing

    def file_path(self, name: str, path: str) -> Path:
        for prefix, root in self._roots(name).items():
            if path.startswith(prefix + "/"):
                rel = path[len(prefix) + 1:]
                if root.is_file():  # a uri_file output: its one file
                    candidate = root if rel == root.name else None
                else:  # a `..`, a NUL or a link out of the folder is a 400, never a file
                    candidate = under(root, rel, field="path")
                if candidate is not None and candidate.is_file():
                    return candidate
        raise NotFoundError(f"job '{name}' has no file '{path}'", details={"path": path})

