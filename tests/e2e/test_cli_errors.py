"""What the CLI says when something is wrong, and the overrides that change a submission.

Errors are one `error: …` line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from e2e_support import Workspace, write_yaml

pytestmark = pytest.mark.e2e

GREETING_JOB = """
    $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
    command: echo "greeting=${{inputs.greeting}}"
    inputs:
      greeting: hello
    compute: local
"""


def assert_cli_error(proc, *needles: str) -> str:
    """Exit 1, `error: …` on stderr (first line), no traceback; each needle in stderr."""
    where = f"\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 1, f"expected exit 1, got {proc.returncode}{where}"
    assert proc.stderr.lstrip().startswith("error:"), where
    assert "Traceback" not in proc.stderr, where
    for needle in needles:
        assert needle in proc.stderr, f"stderr lacks {needle!r}{where}"
    return proc.stderr


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    return tmp_path


def test_unknown_key_points_at_the_line_and_suggests(workspace: Workspace, job_dir: Path):
    path = write_yaml(job_dir, "job.yml", """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        comand: echo hello
        compute: local
    """)
    proc = workspace.cible("job", "create", "-f", path, check=False)
    stderr = assert_cli_error(proc, "job.yml:2:1", "comand")
    assert "'command'" in stderr or "`command`" in stderr or "command?" in stderr, (
        f"the error should suggest `command`:\n{stderr}"
    )


def test_unknown_compute_is_named(workspace: Workspace, job_dir: Path):
    path = write_yaml(job_dir, "job.yml", """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        command: echo hello
        compute: azureml:cpu-cluster
    """)
    proc = workspace.cible("job", "create", "-f", path, check=False)
    assert_cli_error(proc, "cpu-cluster")


def test_set_overrides_an_input(workspace: Workspace, job_dir: Path):
    path = write_yaml(job_dir, "job.yml", GREETING_JOB)
    proc = workspace.cible("job", "create", "-f", path, "--set", "inputs.greeting=hi", "--stream", "-o", "json")
    job = json.loads(proc.stdout)
    assert job["status"] == "Completed"
    assert job["inputs"]["greeting"] == "hi", job["inputs"]
    assert "greeting=hi" in workspace.run_log(job["name"])
    assert "greeting=hello" not in workspace.run_log(job["name"])


def test_set_with_a_bad_value_fails_clearly(workspace: Workspace, job_dir: Path):
    path = write_yaml(job_dir, "job.yml", GREETING_JOB)
    proc = workspace.cible("job", "create", "-f", path, "--set", "limits.timeout=abc", check=False)
    assert_cli_error(proc, "limits.timeout", "--set")


def test_set_without_equals_fails_clearly(workspace: Workspace, job_dir: Path):
    path = write_yaml(job_dir, "job.yml", GREETING_JOB)
    proc = workspace.cible("job", "create", "-f", path, "--set", "limits.timeout", check=False)
    assert_cli_error(proc, "limits.timeout")


def test_name_option_sets_the_job_name(workspace: Workspace, job_dir: Path):
    path = write_yaml(job_dir, "job.yml", GREETING_JOB)
    name = f"myname-{uuid.uuid4().hex[:6]}"
    job = workspace.json("job", "create", "-f", path, "-n", name)
    assert job["name"] == name
    assert workspace.job(name)["name"] == name
    workspace.wait_status(name, "Completed")


def test_name_option_overrides_the_yaml_name(workspace: Workspace, job_dir: Path):
    path = write_yaml(job_dir, "job.yml", GREETING_JOB + "    name: from-yaml-" + uuid.uuid4().hex[:6] + "\n")
    name = f"from-cli-{uuid.uuid4().hex[:6]}"
    job = workspace.json("job", "create", "-f", path, "-n", name)
    assert job["name"] == name


def test_show_unknown_job(workspace: Workspace):
    proc = workspace.cible("job", "show", "-n", "nope", check=False)
    stderr = assert_cli_error(proc, "nope", "does not exist")
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_create_from_a_missing_file(workspace: Workspace, job_dir: Path):
    missing = job_dir / "missing.yml"
    proc = workspace.cible("job", "create", "-f", missing, check=False)
    stderr = assert_cli_error(proc, "missing.yml")
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_empty_file(workspace: Workspace, job_dir: Path):
    path = job_dir / "empty.yml"
    path.write_text("")
    proc = workspace.cible("job", "create", "-f", path, check=False)
    assert_cli_error(proc, "empty.yml")


def test_invalid_yaml_syntax(workspace: Workspace, job_dir: Path):
    path = job_dir / "broken.yml"
    path.write_text("command: echo hi\ninputs: [unclosed\n")
    proc = workspace.cible("job", "create", "-f", path, check=False)
    assert_cli_error(proc, "broken.yml")


def test_cancel_unknown_job(workspace: Workspace):
    proc = workspace.cible("job", "cancel", "-n", "nope", check=False)
    assert_cli_error(proc, "nope", "does not exist")


def test_download_unknown_output(workspace: Workspace, job_dir: Path):
    path = write_yaml(job_dir, "job.yml", GREETING_JOB)
    job = json.loads(workspace.cible("job", "create", "-f", path, "--stream", "-o", "json").stdout)
    proc = workspace.cible("job", "download", "-n", job["name"], "--output-name", "nosuch", "-p", job_dir / "dl", check=False)
    assert_cli_error(proc, "nosuch")


def test_compute_list_and_show(workspace: Workspace):
    computes = workspace.json("compute", "list")
    assert "local" in [c["name"] for c in computes], computes
    local = workspace.json("compute", "show", "-n", "local")
    assert local["name"] == "local"
    proc = workspace.cible("compute", "show", "-n", "cpu-cluster", check=False)
    assert_cli_error(proc, "cpu-cluster")
