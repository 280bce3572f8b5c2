"""client.jobs: submit, follow, cancel and download jobs, as azure-ai-ml's JobOperations."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cible.client.http import WorkspaceClient
from cible.core.errors import CibleError, JobFailedError
from cible.core.lifecycle.jobs import is_terminal
from cible.sdk.downloads import download_listed, segment
from cible.sdk.resources import ListViewType, Resource, view_params

if TYPE_CHECKING:
    from cible.core.models import CommandJob
    from cible.core.models.pipelines import PipelineJob
    from cible.core.models.sweeps import SweepJob

STREAM_POLL_MIN_S = 0.05
STREAM_POLL_MAX_S = 1.0
QUEUE_REASON_POLL_S = 2.0  # how often a stream looks again at why a waiting job waits
WAITING = frozenset({"NotStarted", "Queued", "Preparing", "Provisioning", "Starting"})
PARENT_TYPES = ("sweep", "pipeline", "automl")  # their work is child jobs: their stream is their children's statuses


class CancelPoller:
    """What begin_cancel returns: `.result()` waits until the job has ended."""

    def __init__(self, ops: JobOperations, name: str) -> None:
        self._ops, self._name = ops, name

    def result(self, timeout: float | None = None) -> Resource:
        return self._ops.wait(self._name, timeout=timeout)


BATCH_SIZE = 1000  # jobs per request of create_or_update_many (the server's limit)


class JobOperations:
    def __init__(self, client: WorkspaceClient) -> None:
        self._client = client

    def create_or_update(self, job: CommandJob | SweepJob | PipelineJob | dict[str, Any], *,
                         name: str | None = None) -> Resource:
        body = self._body(job, name)
        return Resource(self._client.json("PUT", f"/jobs/{body['name']}", json=body))

    def create_or_update_many(self, jobs: Iterable[CommandJob | SweepJob | PipelineJob | dict[str, Any]]) -> list[Resource]:
        """Submit many jobs in a round trip per BATCH_SIZE (cible's own; azure-ai-ml submits one at a time):
        each job checked as `create_or_update` checks it, and one refused refuses its request whole,
        naming its index (`jobs[3]`). Each job's name, status, target and warnings, in order; a job
        named as one already stored is answered as it is (`created` false)."""
        bodies = [self._body(job, None) for job in jobs]
        submitted: list[Resource] = []
        for start in range(0, len(bodies), BATCH_SIZE):
            answer = self._client.json("POST", "/jobs", json={"jobs": bodies[start:start + BATCH_SIZE]})
            submitted += [Resource(item) for item in answer["value"]]
        return submitted

    def validate(self, job: CommandJob | SweepJob | PipelineJob | dict[str, Any], *, raise_on_failure: bool = False,
                 name: str | None = None) -> Resource:
        """Check `job` as its submit would, creating no job (azure-ai-ml's `validate`, for command
        jobs too). Local code and inputs are uploaded (content-addressed: the submit reuses them).
        `passed` says the outcome; a failure's `error_messages` map each field to what is wrong, or
        with `raise_on_failure` the submit's own error is raised."""
        body = self._body(job, name)
        try:
            return Resource(self._client.json("POST", f"/jobs/{body['name']}:validate", json=body))
        except CibleError as exc:
            if raise_on_failure or exc.http_status not in (400, 404, 409, 422):  # not the job's fault: raised
                raise
            return Resource({"passed": False, "name": body["name"], "error_messages": _error_messages(exc),
                             "warnings": []})

    def _body(self, job: Any, name: str | None) -> dict[str, Any]:
        """The request body of a submit (command, sweep or pipeline job): every local path it holds
        uploaded, every inline conda file inlined (sdk/job_bodies.py)."""
        # Imported here: show, list, stream and cancel need no models (CLI start-up time).
        from cible.sdk.job_bodies import submission_body

        return submission_body(self._client, job, name)

    def get(self, name: str) -> Resource:
        return Resource(self._client.json("GET", f"/jobs/{name}"))

    def list(self, *, max_results: int | None = None, status: str | None = None, experiment_name: str | None = None,
             list_view_type: ListViewType | str = ListViewType.ACTIVE_ONLY,
             parent_job_name: str | None = None, created_by: str | None = None) -> list[Resource]:
        """Top-level jobs, newest first; archived ones only as `list_view_type` asks (ArchivedOnly, All).
        With `parent_job_name`: that sweep's trials or pipeline's steps; `created_by`: one user's."""
        params = {k: v for k, v in {"status": status, "experiment_name": experiment_name,
                                    "parent_job_name": parent_job_name, "created_by": created_by}.items()
                  if v is not None}
        params.update(view_params(list_view_type))
        return [Resource(j) for j in self._client.items("/jobs", params, limit=max_results)]

    def archive(self, name: str) -> Resource:
        """Hide an ended job from `list` (azure-ai-ml's `archive`); a job still running is refused."""
        return Resource(self._client.json("POST", f"/jobs/{name}:archive"))

    def restore(self, name: str) -> Resource:
        return Resource(self._client.json("POST", f"/jobs/{name}:restore"))

    def update(self, name: str, **changes: Any) -> Resource:
        """Change `display_name`, `description` or `tags` (the whole tags: merge them first to add
        one); None clears a field. Anything else is refused (`az ml job update --set ...`)."""
        return Resource(self._client.json("PATCH", f"/jobs/{name}", json=changes))

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

    def stream(self, name: str, *, out: IO[bytes] | None = None, raise_on_failure: bool = True,
               on_status: Callable[[Resource], None] | None = None) -> Resource:
        """Follow user_logs/std_log.txt until the job ends; raise JobFailedError if it failed.

        `on_status` gets the job each time its status or, while it waits, its queue reason changes.
        """
        out = out or sys.stdout.buffer
        job = self.get(name)
        if job.get("type") in PARENT_TYPES:
            return self._stream_children(job, out, raise_on_failure, on_status)
        offset, delay = 0, STREAM_POLL_MIN_S
        seen: tuple[str, str | None] | None = None
        looked_at = 0.0
        while True:
            response = self._client.request("GET", f"/jobs/{name}/logs", params={"offset": offset})
            status = response.headers["X-Cible-Job-Status"]
            if response.content:
                out.write(response.content)
                out.flush()
                delay = STREAM_POLL_MIN_S
            if on_status is not None and (seen is None or status != seen[0] or (
                    status in WAITING and time.monotonic() - looked_at >= QUEUE_REASON_POLL_S)):
                looked_at = time.monotonic()
                job = self.get(name)
                if (job["status"], job.get("queue_reason")) != seen:
                    seen = (job["status"], job.get("queue_reason"))
                    on_status(job)
            offset = int(response.headers["X-Cible-Next-Offset"])
            if is_terminal(status) and not response.content:
                break
            if not response.content:
                time.sleep(delay)  # no new output yet
                delay = min(delay * 1.5, STREAM_POLL_MAX_S)
        return self._ended(self.get(name), raise_on_failure)

    @staticmethod
    def _ended(job: Resource, raise_on_failure: bool) -> Resource:
        if raise_on_failure and job["status"] != "Completed":
            error = job.get("error") or {}
            raise JobFailedError(
                f"job '{job['name']}' ended {job['status']}: {error.get('message', 'no error recorded')}",
                details={"name": job["name"], "status": job["status"], "error": error},
            )
        return job

    def _stream_children(self, job: Resource, out: IO[bytes], raise_on_failure: bool,
                         on_status: Callable[[Resource], None] | None) -> Resource:
        """A sweep's or pipeline's stream: a line each time one of its trials or steps changes status
        (Azure streams a pipeline's step statuses too), until it ends."""
        seen: dict[str, str] = {}
        status: str | None = None
        delay = STREAM_POLL_MIN_S
        while True:
            lines = []
            for child in job.get("steps") or job.get("trials") or []:
                key = str(child.get("name"))
                said = child["status"] + (f" ({child['job']})" if child.get("job") else "")
                if "metric" in child and child["metric"] is not None:
                    said += f" {child['metric']}"
                if seen.get(key) != said:
                    seen[key] = said
                    what = "step" if "job" in child else "trial"
                    lines.append(f"{what} {key}: {said}\n")
            if lines:
                out.write("".join(lines).encode())
                out.flush()
                delay = STREAM_POLL_MIN_S
            if on_status is not None and job["status"] != status:  # after its children's lines: they came first
                on_status(job)
            status = job["status"]
            if is_terminal(job["status"]):
                return self._ended(job, raise_on_failure)
            time.sleep(delay)  # waiting on remote jobs, with back-off
            delay = min(delay * 1.5, STREAM_POLL_MAX_S)
            job = self.get(job["name"])

    def download(self, name: str, *, download_path: str | Path = ".", output_name: str | None = None, all: bool = False) -> list[Path]:  # noqa: A002
        params: dict[str, Any] = {"all": all}
        if output_name:
            params["output_name"] = output_name
        return download_listed(self._client, f"/jobs/{segment(name)}/files", download_path, params)


def _error_messages(exc: CibleError) -> dict[str, str]:
    """A refusal as azure-ai-ml's ValidationResult.error_messages: field -> what is wrong."""
    details = exc.details
    if isinstance(details, list) and details and all(isinstance(d, dict) for d in details):
        return {str(d.get("field") or "job"): str(d.get("message", exc.message)) for d in details}
    field = details.get("field") if isinstance(details, dict) else None
    return {str(field or "job"): exc.message}
