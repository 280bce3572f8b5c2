"""What the terminal shows: `-o`, `--query`, `--version`, `-h`, `--stream`'s status lines and Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import yaml
from e2e_support import Workspace, wait_until, write_yaml

SMALL = "Standard_DS1_v2"


def test_version_and_short_help(workspace: Workspace) -> None:
    cible = workspace
    version = cible.cible("--version")
    assert version.stdout.startswith("cible ") and version.stdout.split()[1][0].isdigit()
    helped = cible.cible("job", "list", "-h")
    assert "--query" in helped.stdout and "--output" in helped.stdout


def test_output_formats_and_query_answer_as_az_does(workspace: Workspace) -> None:
    cible = workspace
    spec = write_yaml(cible.cwd, "echo.yml", """
        command: echo hi
        environment: azureml:AzureML-sklearn-1.5@latest
        compute: local
        """)
    quiet = cible.cible("job", "create", "-f", spec, "-n", "out-1", "-o", "none")
    assert quiet.stdout == ""
    cible.wait_status("out-1")
    assert cible.cible("job", "show", "-n", "out-1", "--query", "status", "-o", "tsv").stdout == "Completed\n"
    assert json.loads(cible.cible("job", "show", "-n", "out-1", "--query", "name", "-o", "json").stdout) == "out-1"
    assert cible.cible("job", "show", "-n", "out-1", "--query", "name").stdout == "out-1\n"  # a table of one value
    shown = yaml.safe_load(cible.cible("job", "show", "-n", "out-1", "-o", "yaml").stdout)
    assert shown["name"] == "out-1" and shown["status"] == "Completed"
    rows = cible.cible("job", "list", "--query", "[?name=='out-1'].[name, status]", "-o", "tsv").stdout
    assert rows == "out-1\tCompleted\n"
    # Any case for the status filter, as Azure users type it.
    listed = cible.json("job", "list", "--status", "completed")
    assert "out-1" in [j["name"] for j in listed]
    table = cible.cible("job", "list").stdout
    assert "Completed" in table and "Complet…" not in table


def test_a_key_cible_does_not_act_on_is_warned_of_once_with_its_line(workspace: Workspace) -> None:
    cible = workspace
    spec = write_yaml(cible.cwd, "services.yml", """
        command: echo hi
        environment: azureml:AzureML-sklearn-1.5@latest
        compute: local
        services:
          my_jupyter: {type: jupyter_lab}
        """)
    created = cible.cible("job", "create", "-f", spec, "-n", "warned-1")
    warnings = [line for line in (created.stdout + created.stderr).splitlines() if "not acted on" in line]
    assert len(warnings) == 1 and "services.yml:4:" in warnings[0], created.stdout + created.stderr
    assert "not acted on" in " ".join(cible.job("warned-1")["warnings"])  # kept with the job for scripts


def test_a_bad_query_or_format_is_a_usage_error(workspace: Workspace) -> None:
    cible = workspace
    bad = cible.cible("compute", "list", "--query", "[0", check=False)
    assert bad.returncode == 2 and "JMESPath" in bad.stderr and "--query" in bad.stderr
    wrong = cible.cible("compute", "list", "-o", "xml", check=False)
    assert wrong.returncode == 2 and "tsv" in wrong.stderr


def test_deleting_a_compute_that_does_not_exist_asks_nothing(workspace: Workspace) -> None:
    cible = workspace
    proc = subprocess.run([sys.executable, "-m", "cible", "compute", "delete", "-n", "nope"], cwd=cible.cwd,
                          env=cible.env, input="", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and "delete compute" not in proc.stdout + proc.stderr


def test_stream_shows_why_a_job_waits_and_ctrl_c_leaves_it_running(workspace: Workspace) -> None:
    cible = workspace
    cible.json("compute", "create", "--name", "one", "--type", "amlcompute", "--size", SMALL,
               "--min-instances", "0", "--max-instances", "1", "--idle-time-before-scale-down", "120")
    blocker = write_yaml(cible.cwd, "block.yml", """
        command: sleep 600
        environment: azureml:AzureML-sklearn-1.5@latest
        compute: azureml:one
        """)
    cible.json("job", "create", "-f", blocker, "-n", "blocker")
    cible.wait_status("blocker", "Running", timeout=120)
    waiting = write_yaml(cible.cwd, "wait.yml", """
        command: echo finally ran
        environment: azureml:AzureML-sklearn-1.5@latest
        compute: azureml:one
        """)
    # Ctrl-C as a terminal delivers it, whatever the test runner inherited: a runner started in the
    # background of a shell without job control ignores SIGINT, and so would the CLI it starts.
    streaming = subprocess.Popen([sys.executable, "-m", "cible", "job", "create", "-f", waiting, "-n", "waiter",
                                  "--stream"], cwd=cible.cwd, env=cible.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(streaming.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("Queued" in line and "queue of one" in line for line in lines), 60,
                   message="a status line with the queue reason")
        streaming.send_signal(signal.SIGINT)
        streaming.wait(timeout=30)
    finally:
        if streaming.poll() is None:
            streaming.kill()
    reader.join(timeout=10)
    stderr = streaming.stderr.read()
    assert streaming.returncode == 130, stderr
    assert "it goes on" in stderr and "Execution Summary" not in "".join(lines)
    assert cible.job("waiter")["status"] not in ("Canceled", "CancelRequested")
    cible.cible("job", "cancel", "-n", "blocker")
    follow = cible.cible("job", "stream", "-n", "waiter")
    assert "finally ran" in follow.stdout and "Completed" in follow.stdout


def test_az_ml_verbs_archive_restore_update_validate_download(workspace: Workspace) -> None:
    cible = workspace
    spec = write_yaml(cible.cwd, "model-job.yml", """
        command: mkdir -p ${{outputs.model}} && echo weights > ${{outputs.model}}/weights.txt
        environment: azureml:AzureML-sklearn-1.5@latest
        compute: local
        outputs: {model: {type: uri_folder}}
        """)
    assert "valid" in cible.cible("job", "validate", "-f", spec).stdout
    refused = cible.cible("job", "validate", "-f", spec, "--set", "compute=azureml:nope", check=False)
    assert refused.returncode == 1 and "nope" in refused.stderr
    cible.cible("job", "create", "-f", spec, "-n", "verbs-1", "-o", "none")
    cible.wait_status("verbs-1", "Completed")

    cible.cible("job", "archive", "-n", "verbs-1", "-o", "none")
    assert "verbs-1" not in cible.cible("job", "list", "--query", "[].name", "-o", "tsv").stdout.split()
    assert "verbs-1" in cible.cible("job", "list", "--archived-only", "--query", "[].name", "-o", "tsv").stdout.split()
    cible.cible("job", "restore", "-n", "verbs-1", "-o", "none")
    updated = cible.json("job", "update", "-n", "verbs-1", "--set", "display_name=baseline", "--set", "tags.team=ml")
    assert updated["display_name"] == "baseline" and updated["tags"]["team"] == "ml"
    assert cible.cible("job", "update", "-n", "verbs-1", "--set", "command=ls", check=False).returncode == 1

    cible.cible("model", "create", "-n", "verbs-model", "--type", "custom_model",
                "--path", "azureml://jobs/verbs-1/outputs/model", "-o", "none")
    cible.cible("model", "download", "-n", "verbs-model", "-p", cible.cwd / "dl")
    assert (cible.cwd / "dl" / "verbs-model" / "model" / "weights.txt").read_text() == "weights\n"
    cible.cible("model", "archive", "-n", "verbs-model", "-o", "none")
    assert "verbs-model" not in cible.cible("model", "list", "--query", "[].name", "-o", "tsv").stdout.split()
    cible.cible("model", "restore", "-n", "verbs-model", "-o", "none")
    assert "verbs-model" in cible.cible("model", "list", "--query", "[].name", "-o", "tsv").stdout.split()
