"""MLflow's run links (`…/mlflow/#/experiments/1/runs/<id>`, as MLflow prints them in a job's log)
lead to the run's job page: a browser asking for MLflow's UI is sent to static/mlflow-run.html
(auth.py), whose script reads the run id from the fragment (never sent to a server) and opens
/runs/<id> here, which finds the job by the run's `cible.job` tag."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cible.server.studio.web import SECURITY_HEADERS, Signed, message_page
from cible.server.tracking import API
from cible.server.tracking_policy import JOB_TAG

router = APIRouter(include_in_schema=False)


@router.get("/runs/{run_id}")
def run_page(run_id: str, request: Request, who: Signed) -> Response:
    import httpx

    from cible.client.http import tls_verify

    tracking = request.app.state.tracking
    if tracking is None:
        return message_page(request, who, 404, "No tracking", "This workspace runs without MLflow tracking.")
    try:
        if not tracking.ready(timeout=5):  # started on first use: it may be starting now
            raise httpx.ConnectError(tracking.unavailable_message())
        answer = httpx.get(f"{tracking.url}{API}/runs/get", params={"run_id": run_id}, timeout=5,
                           headers=tracking.auth_headers, trust_env=False, verify=tls_verify(tracking.url))
        tags = answer.json().get("run", {}).get("data", {}).get("tags", []) if answer.status_code == 200 else []
    except (httpx.HTTPError, ValueError, AttributeError):
        return message_page(request, who, 503, "MLflow is not answering",
                            "The workspace's MLflow did not answer; try again in a moment.")
    job = next((t.get("value") for t in tags if isinstance(t, dict) and t.get("key") == JOB_TAG), None)
    if not isinstance(job, str):
        return message_page(request, who, 404, "Run not found", f"No job of this workspace has the MLflow run "
                                                                f"'{run_id}'.")
    return RedirectResponse(f"/jobs/{quote(job, safe='')}", status_code=303, headers=SECURITY_HEADERS)
