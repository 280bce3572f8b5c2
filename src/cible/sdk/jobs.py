"""client.jobs: submit, follow, cancel and download jobs, as azure-ai-ml's JobOperations."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cible.client.http import WorkspaceClient
from cible.core.errors import JobFailedError
from cible.core.lifecycle.jobs import is_terminal
from cible.core.names import job_name
from cible.core.safepaths import under
from cible.sdk.resources import Resource

if TYPE_CHECKING:
    from cible.core.models import CommandJob

STREAM_POLL_MIN_S = 0.05
STREAM_POLL_MAX_S = 1.0


class CancelPoller:
    """What begin_cancel returns: `.result()` waits until the job has ended."""

    def __init__(self, ops: JobOperations, name: str) -> None:
        self._ops, self._name = ops, name

    def result(self, timeout: float | None = None) -> Resource:
        return self._ops.wait(self._name, timeout=timeout)


class JobOperations:
    def __init__(self, client: WorkspaceClient) -> None:
        self._client = client

    def create_or_update(self, job: CommandJob | dict[str, Any], *, name: str | None = None) -> Resource:
        # Imported here: show, list, stream and cancel need no models (CLI start-up time).
        from cible.core.models import CommandJob, JobInput
        from cible.core.naming import experiment_from_folder
        from cible.core.specs.azureml import refs

        spec = job if isinstance(job, CommandJob) else CommandJob.model_validate(job)
        body = spec.model_dump(mode="json", exclude_none=True)
        body.pop("schema_", None)
        body.pop("$schema", None)
        body["name"] = name or body.get("name") or job_name()
        # Azure's default experiment: the folder the submission was made from (made a valid name).
        body.setdefault("experiment_name", experiment_from_folder(Path.cwd().name))
        if isinstance(body.get("environment"), dict):
            from cible.sdk.assets import inline_conda_file

            body["environment"] = inline_conda_file(body["environment"])
        if body.get("code"):
            body["code"] = self._upload("code", body["code"])
        for key, value in (spec.inputs or {}).items():
            if isinstance(value, JobInput) and value.path and refs.classify_path(value.path) == "local":
                body["inputs"][key]["path"] = self._upload(f"inputs.{key}.path", value.path)
        return Resource(self._client.json("PUT", f"/jobs/{body['name']}", json=body))

    def _upload(self, field: str, local: str) -> str:
        from cible.sdk.uploads import upload_path  # pathspec: only when something is uploaded

        return upload_path(self._client, local, field)

    def get(self, name: str) -> Resource:
        return Resource(self._client.json("GET", f"/jobs/{name}"))

    def list(self, *, max_results: int | None = None, status: str | None = None, experiment_name: str | None = None) -> list[Resource]:
        params = {k: v for k, v in {"status": status, "experiment_name": experiment_name}.items() if v is not None}
        return [Resource(j) for j in self._client.items("/jobs", params, limit=max_results)]

    def begin_cancel(self, name: str) -> CancelPoller:
        self._client.json("POST", f"/jobs/{name}:cancel")
        return CancelPoller(self, name)

    def wait(self, name: str, timeout: float | None = None) -> Resource:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = STREAM_POLL_MIN_S
        while True:
            job = self.get(name)
            if is_terminal(job["status"]) or (deadline is not None and time.monotonic() >= deadline):
                return job
            time.sleep(delay)  # waiting on a remote job, with back-off
            delay = min(delay * 1.5, STREAM_POLL_MAX_S)

    def stream(self, name: str, *, out: IO[bytes] | None = None, raise_on_failure: bool = True) -> Resource:
        """Follow user_logs/std_log.txt until the job ends; raise JobFailedError if it failed."""
        out = out or sys.stdout.buffer
        offset, delay = 0, STREAM_POLL_MIN_S
        while True:
            response = self._client.request("GET", f"/jobs/{name}/logs", params={"offset": offset})
            if response.content:
                out.write(response.content)
                out.flush()
                delay = STREAM_POLL_MIN_S
            offset = int(response.headers["X-Cible-Next-Offset"])
            if is_terminal(response.headers["X-Cible-Job-Status"]) and not response.content:
                break
            if not response.content:
                time.sleep(delay)  # no new output yet
                delay = min(delay * 1.5, STREAM_POLL_MAX_S)
        job = self.get(name)
        if raise_on_failure and job["status"] != "Completed":
            error = job.get("error") or {}
            raise JobFailedError(
                f"job '{name}' ended {job['status']}: {error.get('message', 'no error recorded')}",
                details={"name": name, "status": job["status"], "error": error},
            )
        return job

    def download(self, name: str, *, download_path: str | Path = ".", output_name: str | None = None, all: bool = False) -> list[Path]:  # noqa: A002
        params: dict[str, Any] = {"all": all}
        if output_name:
            params["output_name"] = output_name
        files = self._client.items(f"/jobs/{name}/files", params)
        written = []
        for entry in files:
            target = under(Path(download_path), entry["path"], field="path")  # never outside download_path
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            with open(tmp, "wb") as fh:
                self._client.stream_to(f"/jobs/{name}/files/{entry['path']}", fh)
            tmp.replace(target)
            written.append(target)
        return written
