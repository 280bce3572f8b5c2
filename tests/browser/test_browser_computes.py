"""Computes and assets in the studio with the workspace's real data: a compute instance stopped (and
started again) from its page, a cluster's page with its nodes, the computes list with quotas and
costs; the models, data, environments and endpoints pages."""

from __future__ import annotations

import pytest
from browser_support import Studio, expect
from e2e_support import REPO, Workspace, wait_until, write_yaml

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SMALL = "Standard_DS1_v2"
INSTANCE = "studio-ci"
CLUSTER = "studio-cluster"


def compute_state(ws: Workspace, name: str) -> str:
    return ws.json("compute", "show", "-n", name)["state"]


@pytest.fixture(scope="module")
def instance(workspace: Workspace) -> str:
    spec = write_yaml(workspace.cwd, "instance.yml", f"""
        name: {INSTANCE}
        type: computeinstance
        size: {SMALL}
        idle_time_before_shutdown_minutes: 60
        """)
    workspace.cible("compute", "create", "-f", spec)
    wait_until(lambda: compute_state(workspace, INSTANCE) == "Running", 60, interval=0.2,
               message=f"instance {INSTANCE} to be Running")
    return INSTANCE


@pytest.fixture(scope="module")
def cluster(workspace: Workspace) -> str:
    """A cluster that keeps one node, and a job that ran on it."""
    spec = write_yaml(workspace.cwd, "cluster.yml", f"""
        name: {CLUSTER}
        type: amlcompute
        size: {SMALL}
        min_instances: 1
        max_instances: 2
        idle_time_before_scale_down: 60
        """)
    workspace.cible("compute", "create", "-f", spec)
    job = write_yaml(workspace.cwd, "on-cluster.yml", f"""
        command: echo hello from the cluster
        compute: azureml:{CLUSTER}
        experiment_name: studio-computes
        """)
    workspace.cible("job", "create", "-f", job, "-n", "on-cluster")
    workspace.wait_status("on-cluster", timeout=90)
    return CLUSTER


@pytest.fixture(scope="module")
def session(studio: Studio):
    context, _ = studio.signed_in("/computes")
    yield context
    context.close()


def test_stop_and_start_an_instance_from_its_page(studio: Studio, session, workspace: Workspace,
                                                  instance: str) -> None:
    page = studio.page(session)
    page.goto(f"{studio.url}/computes/{instance}")
    state = page.locator("#instance-state")
    expect(state).to_contain_text("Running", timeout=30_000)
    expect(page.locator("#idle-reason")).to_be_visible()
    studio.look(page, "instance-running")

    page.locator("#instance-stop").click()
    expect(state).to_contain_text("Stopped", timeout=60_000)  # the panel refreshes itself
    assert compute_state(workspace, instance) == "Stopped"
    studio.look(page, "instance-stopped")

    page.locator("#instance-start").click()
    expect(state).to_contain_text("Running", timeout=60_000)
    wait_until(lambda: compute_state(workspace, instance) == "Running", 30, interval=0.2,
               message=f"the CLI to see {instance} Running")
    page.close()


def test_a_clusters_page_shows_its_nodes_and_their_timeline(studio: Studio, session, cluster: str) -> None:
    page = studio.page(session)
    page.goto(f"{studio.url}/computes/{cluster}")
    expect(page.locator("h1")).to_contain_text(cluster)
    expect(page.locator('#nodes-table [data-testid="node-row"]').first).to_be_visible(timeout=30_000)
    expect(page.locator("#node-timeline")).to_be_visible()
    expect(page.locator("#allocation-state")).to_be_visible()
    expect(page.locator("main")).to_contain_text("on-cluster")  # the job that ran on it
    studio.look(page, "cluster")
    page.close()


def test_the_computes_list_with_quotas_and_costs(studio: Studio, session, instance: str, cluster: str) -> None:
    page = studio.page(session)
    page.goto(f"{studio.url}/computes")
    rows = page.locator('[data-testid="compute-row"]')
    for name in (instance, cluster):
        expect(rows.filter(has_text=name)).to_have_count(1)
    expect(page.locator("#quota-usage")).to_be_visible()
    expect(page.locator("#cost-by-compute")).to_be_visible()
    rows.filter(has_text=cluster).get_by_role("link", name=cluster).click()
    studio.wait_path(page, f"/computes/{cluster}")
    page.goto(f"{studio.url}/computes")
    studio.look(page, "computes-list")
    page.close()


MLMODEL = """\
artifact_path: model
flavors:
  python_function:
    loader_module: mlflow.sklearn
    model_path: model.pkl
    python_version: 3.11.2
  sklearn:
    pickled_model: model.pkl
    serialization_format: cloudpickle
    sklearn_version: 1.5.2
mlflow_version: 2.16.0
"""


@pytest.fixture(scope="module")
def assets(workspace: Workspace) -> dict[str, str]:
    model = workspace.cwd / "model"
    model.mkdir(exist_ok=True)
    (model / "MLmodel").write_text(MLMODEL)
    (model / "model.pkl").write_bytes(b"not really a pickle")
    workspace.cible("model", "create", "-n", "studio-model", "-p", model, "-t", "mlflow_model")
    workspace.cible("model", "create", "-n", "studio-model", "-p", model, "-t", "mlflow_model")  # version 2
    (workspace.cwd / "iris.csv").write_text("a,b,label\n1,2,x\n3,4,y\n")
    workspace.cible("data", "create", "-n", "studio-data", "-p", workspace.cwd / "iris.csv", "-t", "uri_file")
    # Registered, not built (a build happens when a job first needs it).
    workspace.cible("environment", "create", "-f", REPO / "examples" / "environments" / "sklearn.yml")
    return {"model": "studio-model", "data": "studio-data", "environment": "sklearn-train"}


def test_the_models_pages(studio: Studio, session, assets: dict[str, str]) -> None:
    page = studio.page(session)
    name = assets["model"]
    page.goto(f"{studio.url}/models")
    expect(page.locator("main")).to_contain_text(name)
    studio.look(page, "models-list")
    page.goto(f"{studio.url}/models/{name}")
    expect(page.locator("main")).to_contain_text("2")
    studio.look(page, "model-versions")
    page.goto(f"{studio.url}/models/{name}/1")
    expect(page.locator("main")).to_contain_text("python_function")  # its MLmodel
    expect(page.locator("main")).to_contain_text("model.pkl")  # its files
    studio.look(page, "model-version")
    page.close()


def test_the_data_and_environments_pages(studio: Studio, session, assets: dict[str, str]) -> None:
    page = studio.page(session)
    page.goto(f"{studio.url}/data")
    expect(page.locator("main")).to_contain_text(assets["data"])
    studio.look(page, "data-list")
    page.goto(f"{studio.url}/data/{assets['data']}")
    expect(page.locator("main")).to_contain_text("uri_file")
    studio.look(page, "data-versions")
    page.goto(f"{studio.url}/environments")
    expect(page.locator("main")).to_contain_text(assets["environment"])
    studio.look(page, "environments-list")
    page.goto(f"{studio.url}/environments/{assets['environment']}")
    expect(page.locator("main")).to_contain_text("conda")
    studio.look(page, "environment-versions")
    page.close()


def test_the_endpoints_page(studio: Studio, session) -> None:
    page = studio.page(session)
    response = page.goto(f"{studio.url}/endpoints")
    assert response is not None
    assert response.status == 200, response.status  # the page exists: a 404 is a failure, never a skip
    studio.look(page, "endpoints-list")
    page.close()
