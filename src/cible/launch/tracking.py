"""The job's MLflow run, as the launcher sees it: create it, hand it to the job, end it.

As on Azure ML, the run exists before the command starts and the command finds it in its
environment (MLFLOW_TRACKING_URI, MLFLOW_RUN_ID, MLFLOW_EXPERIMENT_NAME/_ID and the token in
MLFLOW_TRACKING_TOKEN), so `mlflow.log_metric` & co. and `mlflow.autolog()` log into the job's
run without `start_run()`. Talks to any MLflow tracking server over MLflow's REST API (the
workspace's is at ``<workspace url>/mlflow``). Stdlib only (urllib + json): the launcher
imports it, on any node.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

API = "/api/2.0/mlflow"
RUN_NAME_TAG = "mlflow.runName"
# cible's final job statuses (and MLflow's own) -> MLflow run statuses
RUN_STATUS = {
    "Completed": "FINISHED", "Failed": "FAILED", "Canceled": "KILLED",
    "FINISHED": "FINISHED", "FAILED": "FAILED", "KILLED": "KILLED", "RUNNING": "RUNNING",
}
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_REQUEST_TIMEOUT_S = 30.0


class TrackingError(Exception):
    """The tracking server refused a request, or could not be reached before the deadline."""

    def __init__(self, message: str, *, status: int | None = None, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


def start_run(
    tracking_uri: str,
    token: str | None,
    experiment_name: str,
    run_name: str,
    tags: dict[str, str] | None = None,
    timeout_s: float = 120,
    run_id: str | None = None,
    experiment_id: str | None = None,
    search_existing: bool = True,
) -> dict[str, str]:
    """Get or create the job's run; returns {"run_id", "experiment_id"}.

    Idempotent, for a launcher that starts again after a crash: `run_id` (the one recorded
    before) is reused when the server knows it; otherwise an active run of the experiment named
    `run_name` (the job's name, unique in a workspace) is reused; otherwise a run is created
    with ``mlflow.runName`` = `run_name` and `tags`. The experiment is created when missing
    (restored when deleted); two jobs creating it at once end with one experiment. Retries
    while the server is unreachable or answers 5xx/429, until `timeout_s`.
    """
    api = _Api(tracking_uri, token, timeout_s)
    if run_id:
        run = api.get_run(run_id)
        if run is not None:
            return {"run_id": run["info"]["run_id"], "experiment_id": run["info"]["experiment_id"]}
    known_experiment = experiment_id is not None
    experiment_id = experiment_id or api.experiment_id(experiment_name)
    if search_existing:
        existing = api.find_run(experiment_id, run_name)
        if existing is not None:
            return {"run_id": existing, "experiment_id": experiment_id}
    all_tags = {**(tags or {}), RUN_NAME_TAG: run_name}

    def create(experiment: str) -> dict[str, str]:
        body = api.call("POST", "/runs/create", {
            "experiment_id": experiment,
            "run_name": run_name,
            "start_time": _now_ms(),
            "tags": [{"key": k, "value": str(v)} for k, v in all_tags.items()],
        })
        return {"run_id": body["run"]["info"]["run_id"], "experiment_id": experiment}

    try:
        return create(experiment_id)
    except TrackingError as exc:
        # The id the caller knew may be stale (the experiment was deleted): look it up by name.
        if not known_experiment or exc.status is None or exc.status >= 500:
            raise
        return create(api.experiment_id(experiment_name))


def experiment_id(tracking_uri: str, token: str | None, name: str, timeout_s: float = 5,
                  headers: dict[str, str] | None = None) -> str:
    """The id of experiment `name`, created (or restored) when needed."""
    return _Api(tracking_uri, token, timeout_s, headers).experiment_id(name)


def find_run(tracking_uri: str, token: str | None, experiment_name: str, run_name: str, timeout_s: float = 5,
             headers: dict[str, str] | None = None) -> str | None:
    """The id of the latest active run named `run_name` (a job's name) in experiment `experiment_name`."""
    api = _Api(tracking_uri, token, timeout_s, headers)
    experiment = api._experiment_by_name(experiment_name)
    return api.find_run(experiment["experiment_id"], run_name) if experiment else None


def end_run(tracking_uri: str, token: str | None, run_id: str, status: str, timeout_s: float = 60) -> None:
    """Set the run's final status: Completed/Failed/Canceled (or FINISHED/FAILED/KILLED)."""
    try:
        mlflow_status = RUN_STATUS[status]
    except KeyError:
        raise ValueError(f"unknown run status {status!r}: expected one of {sorted(RUN_STATUS)}") from None
    _Api(tracking_uri, token, timeout_s).call(
        "POST", "/runs/update", {"run_id": run_id, "status": mlflow_status, "end_time": _now_ms()})


def job_environment(tracking_uri: str, token: str | None, run: dict[str, str], experiment_name: str) -> dict[str, str]:
    """The variables that bind MLflow's fluent API in the job to its run (Azure's names)."""
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri.rstrip("/"),
        "MLFLOW_RUN_ID": run["run_id"],
        "MLFLOW_EXPERIMENT_ID": run["experiment_id"],
        "MLFLOW_EXPERIMENT_NAME": experiment_name,
    }
    if token:
        env["MLFLOW_TRACKING_TOKEN"] = token
    return env


def with_run_token(plan: dict[str, Any], token: str) -> dict[str, Any]:
    """The plan a launcher is handed: the job's run token added (the plan the server stores holds
    no token; the run token is derived again whenever a launcher is started): to its tracking block,
    and as `api_token` for a batch job's runners."""
    tracking = plan.get("tracking")
    handed = {**plan, "tracking": {**tracking, "token": token}} if tracking else plan
    if plan.get("batch"):  # a batch job's runners report to the server's API with it (cible.serving.batch)
        handed = {**handed, "api_token": token}
    return handed


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Api:
    def __init__(self, tracking_uri: str, token: str | None, timeout_s: float,
                 headers: dict[str, str] | None = None) -> None:
        self.base = tracking_uri.rstrip("/") + API
        self.token = token
        self.headers = headers or {}
        self.deadline = time.monotonic() + timeout_s

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, str] | None = None) -> dict[str, Any]:
        """One REST call; retried on transient failures until the deadline. Raises TrackingError."""
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", **self.headers}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        delay = 0.2
        while True:
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            remaining = self.deadline - time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=max(1.0, min(_REQUEST_TIMEOUT_S, remaining))) as resp:
                    raw = resp.read()
                return json.loads(raw) if raw else {}
            except urllib.error.HTTPError as exc:
                text = exc.read().decode("utf-8", "replace")
                if exc.code not in _RETRY_STATUS:
                    raise _refused(method, path, exc.code, text) from None
                problem = f"HTTP {exc.code}: {text[:300]}"
            except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out
                problem = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if time.monotonic() + delay >= self.deadline:
                raise TrackingError(f"the MLflow tracking server at {self.base} did not answer {method} {path} "
                                    f"in time; last problem: {problem}")
            time.sleep(delay)  # backing off between retries, bounded by the deadline
            delay = min(delay * 2, 2.0)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        try:
            run = self.call("GET", "/runs/get", query={"run_id": run_id})["run"]
        except TrackingError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return run if run["info"].get("lifecycle_stage", "active") == "active" else None

    def experiment_id(self, name: str) -> str:
        for _ in range(3):
            experiment = self._experiment_by_name(name)
            if experiment is not None:
                if experiment.get("lifecycle_stage") == "deleted":
                    self.call("POST", "/experiments/restore", {"experiment_id": experiment["experiment_id"]})
                return experiment["experiment_id"]
            try:
                return self.call("POST", "/experiments/create", {"name": name})["experiment_id"]
            except TrackingError as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                # another job created it between our lookup and our create: look it up again
        raise TrackingError(f"could not get or create the MLflow experiment {name!r}")

    def _experiment_by_name(self, name: str) -> dict[str, Any] | None:
        try:
            return self.call("GET", "/experiments/get-by-name", query={"experiment_name": name})["experiment"]
        except TrackingError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def find_run(self, experiment_id: str, run_name: str) -> str | None:
        escaped = run_name.replace("\\", "\\\\").replace("'", "\\'")
        body = self.call("POST", "/runs/search", {
            "experiment_ids": [experiment_id],
            "filter": f"tags.`{RUN_NAME_TAG}` = '{escaped}'",
            "run_view_type": "ACTIVE_ONLY",
            "max_results": 1,
            "order_by": ["attributes.start_time DESC"],
        })
        runs = body.get("runs") or []
        return runs[0]["info"]["run_id"] if runs else None


def _refused(method: str, path: str, status: int, text: str) -> TrackingError:
    try:
        payload = json.loads(text)
    except ValueError:
        payload = {}
    error_code = payload.get("error_code") if isinstance(payload, dict) else None
    if error_code is None and isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error_code = payload["error"].get("code")  # the workspace's own envelope (e.g. Unauthorized)
    message = (payload.get("message") if isinstance(payload, dict) else None) or text[:300]
    return TrackingError(f"the MLflow tracking server refused {method} {path} (HTTP {status}): {message}",
                         status=status, error_code=error_code)
