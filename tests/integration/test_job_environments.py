"""Jobs in their environments, through a real server: registered, broken, and shared by concurrent jobs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

JOB_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    from cible import MLClient

    home = tmp_path_factory.mktemp("ws")
    # A cache of this module's own, so "built once" is exact whatever ran before on this machine.
    previous = os.environ.get("CIBLE_ENV_CACHE")
    os.environ["CIBLE_ENV_CACHE"] = str(tmp_path_factory.mktemp("envs"))
    try:
        ml = MLClient(home=home)
    finally:
        if previous is None:
            os.environ.pop("CIBLE_ENV_CACHE")
        else:
            os.environ["CIBLE_ENV_CACHE"] = previous
    yield ml
    os.kill(json.loads((home / "server.json").read_text())["pid"], signal.SIGTERM)


def log_of(client, name: str) -> str:  # noqa: ANN001
    return client._client.request("GET", f"/jobs/{name}/logs").content.decode()


def test_a_registered_environment_runs_the_job_by_name(client, tmp_path: Path):  # noqa: ANN001
    from cible import command

    conda = tmp_path / "conda.yml"
    conda.write_text("dependencies:\n  - python=3.11\n  - pip:\n    - six==1.16.0\n")
    env = client.environments.create_or_update({"name": "six-env", "image": "python:3.11", "conda_file": str(conda)})
    assert env.version == "1" and env.conda_file["dependencies"][1]["pip"] == ["six==1.16.0"]
    job = client.jobs.create_or_update(command(
        command='python -c "import six, sys; print(six.__version__, sys.prefix)"',
        environment="azureml:six-env@latest", compute="local"))
    done = client.jobs.wait(job.name, timeout=JOB_TIMEOUT_S)
    assert done.status == "Completed", done.get("error")
    assert "1.16.0" in log_of(client, job.name)


def test_a_broken_conda_file_fails_at_preparing_with_the_installers_error(client):  # noqa: ANN001
    from cible import command

    job = client.jobs.create_or_update(command(
        command="echo never", compute="local",
        environment={"image": "python", "conda_file": {"dependencies": [{"pip": ["cible-no-such-package-xyz"]}]}}))
    done = client.jobs.wait(job.name, timeout=JOB_TIMEOUT_S)
    assert done.status == "Failed"
    assert done.error["code"] == "EnvironmentBuildFailed"
    assert "cible-no-such-package-xyz" in done.error["message"]
    assert "Running" not in [h["status"] for h in done.status_history]
    assert "never" not in log_of(client, job.name)


def test_two_jobs_on_one_new_environment_build_it_once(client):  # noqa: ANN001
    from cible import command

    env = {"image": "python", "conda_file": {"dependencies": [{"pip": ["tomli==2.0.1"]}]}}
    names = [client.jobs.create_or_update(command(command='python -c "import tomli; print(\'ok\')"',
                                                  environment=env, compute="local")).name for _ in range(2)]
    for name in names:
        assert client.jobs.wait(name, timeout=JOB_TIMEOUT_S).status == "Completed"
    logs = [log_of(client, name) for name in names]
    assert sum(log.count("building a Python") for log in logs) == 1, logs
    assert all("ok" in log for log in logs)


def test_an_unknown_environment_is_refused_at_submit(client):  # noqa: ANN001
    from cible import command
    from cible.core.errors import NotFoundError

    with pytest.raises(NotFoundError, match="ghost-env"):
        client.jobs.create_or_update(command(command="echo", environment="azureml:ghost-env:3", compute="local"))
    assert client.compute.list()  # and the server goes on answering


def test_a_registered_model_and_data_asset_are_job_inputs(client, tmp_path: Path):  # noqa: ANN001
    from cible import Input, command

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.txt").write_text("w=0.5\n")
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    model = client.models.create_or_update({"name": "tiny", "type": "custom_model", "path": str(model_dir)})
    data = client.data.create_or_update({"name": "rows", "type": "uri_file", "path": str(tmp_path / "rows.csv")})
    assert model.path.endswith("/model") and data.version == "1"
    job = client.jobs.create_or_update(command(
        command="cat ${{inputs.m}}/weights.txt ${{inputs.d}}", compute="local",
        inputs={"m": Input(type="custom_model", path="azureml:tiny@latest"),
                "d": Input(type="uri_file", path="azureml:rows:1")}))
    assert client.jobs.wait(job.name, timeout=JOB_TIMEOUT_S).status == "Completed"
    log = log_of(client, job.name)
    assert "w=0.5" in log and "1,2" in log
