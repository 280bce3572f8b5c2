"""`cible online-endpoint` / `online-deployment`: what their flags mean, checked before any request
(traffic splits, --set, key types), the request bodies the SDK builds from a deployment YAML, and
how the SDK's waits end. No server: a command that got as far as asking for a client fails the test."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cible.cli import deployments, endpoints
from cible.cli.endpoints import set_option, shares, traffic_option
from cible.cli.main import app
from cible.core.errors import NotFoundError
from cible.sdk.endpoints import (
    DeletePoller,
    DeploymentFailedError,
    DeploymentPoller,
    OperationTimeoutError,
    deployment_spec,
    endpoint_spec,
)
from cible.sdk.resources import Resource


@pytest.fixture(autouse=True)
def no_server(monkeypatch):  # noqa: ANN001, ANN201
    def refuse():  # noqa: ANN202
        raise AssertionError("the command asked for a client before checking its flags")

    monkeypatch.setattr(endpoints, "client", refuse)
    monkeypatch.setattr(deployments, "client", refuse)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, AssertionError):
        raise result.exception
    said = result.output + (result.stderr if result.stderr_bytes is not None else "")
    return result.exit_code, " ".join(said.replace("│", " ").split())  # the words, out of rich's error box


# ---- --traffic / --mirror-traffic ------------------------------------------------------------------


def test_traffic_is_pairs_in_the_order_written() -> None:
    assert traffic_option("blue=90 green=10") == {"blue": 90, "green": 10}
    assert list(traffic_option("green=10  blue=90")) == ["green", "blue"]
    assert traffic_option("blue=90,green=10") == {"blue": 90, "green": 10}  # commas too
    assert traffic_option("blue=100") == {"blue": 100}
    assert traffic_option("blue=0 green=0") == {"blue": 0, "green": 0}  # no traffic: allowed (header pins only)


def test_mirror_traffic_is_parsed_the_same_way() -> None:
    assert traffic_option("green=10", "--mirror-traffic") == {"green": 10}


@pytest.mark.parametrize("text, said", [
    ("", "no traffic given"),
    ("blue", "'blue' is not <deployment>=<percent>"),
    ("blue=", "'blue=' is not <deployment>=<percent>"),
    ("=90", "is not <deployment>=<percent>"),
    ("blue=90%", "'90%' is not a whole percent"),
    ("blue=ninety", "is not a whole percent"),
    ("blue=-5", "is not a whole percent"),
    ("blue=50 blue=50", "names deployment 'blue' twice"),
])
def test_a_malformed_split_is_a_usage_error_that_shows_the_form(text: str, said: str) -> None:
    with pytest.raises(typer.BadParameter) as caught:
        traffic_option(text)
    assert said in caught.value.message
    assert caught.value.param_hint == "'--traffic'"


def test_a_mirror_error_names_its_option() -> None:
    with pytest.raises(typer.BadParameter) as caught:
        traffic_option("green", "--mirror-traffic")
    assert caught.value.param_hint == "'--mirror-traffic'"
    assert "mirror traffic 'green'" in caught.value.message and "'green=10'" in caught.value.message


def test_shares_print_in_the_cli_form() -> None:
    assert shares({"blue": 90, "green": 10}) == "blue=90 green=10"
    assert shares(None) == "" and shares({}) == ""


def test_update_refuses_a_bad_split_before_asking_the_server() -> None:
    code, out = run("online-endpoint", "update", "-n", "my-endpoint", "--traffic", "blue=90 green=1O")
    assert code == 2
    assert "'1O' is not a whole percent" in out and "--traffic" in out


def test_update_refuses_a_bad_mirror_before_asking_the_server() -> None:
    code, out = run("online-endpoint", "update", "-n", "my-endpoint", "--mirror-traffic", "green:10")
    assert code == 2 and "--mirror-traffic" in out and "is not <deployment>=<percent>" in out


def test_update_with_nothing_to_change_says_what_it_takes() -> None:
    code, out = run("online-endpoint", "update", "-n", "my-endpoint")
    assert code == 2 and "-f, --traffic, --mirror-traffic or --set" in out


def test_update_without_a_file_needs_the_name() -> None:
    code, out = run("online-endpoint", "update", "--traffic", "blue=100")
    assert code == 2 and "name (-n)" in out


# ---- --set, --key-type, --container -----------------------------------------------------------------


def test_set_assignments_are_checked_for_their_form() -> None:
    assert set_option(["instance_count=2", "request_settings.request_timeout_ms=9000"]) == [
        "instance_count=2", "request_settings.request_timeout_ms=9000"]
    assert set_option(None) == []
    with pytest.raises(typer.BadParameter) as caught:
        set_option(["instance_count"])
    assert "expected <path>=<value>" in caught.value.message and caught.value.param_hint == "'--set'"
    with pytest.raises(typer.BadParameter, match="empty segment"):
        set_option(["scale_settings..max_instances=3"])


def test_deployment_update_checks_set_before_asking_the_server() -> None:
    code, out = run("online-deployment", "update", "-n", "blue", "-e", "my-endpoint", "--set", "instance_count")
    assert code == 2 and "expected <path>=<value>" in out


def test_deployment_update_needs_a_file_or_set() -> None:
    code, out = run("online-deployment", "update", "-n", "blue", "-e", "my-endpoint")
    assert code == 2 and "-f or --set" in out


def test_deployment_update_by_set_needs_the_deployment_and_its_endpoint() -> None:
    code, out = run("online-deployment", "update", "-n", "blue", "--set", "instance_count=2")
    assert code == 2 and "(-n) and its endpoint (-e)" in out


def test_regenerate_keys_takes_primary_or_secondary() -> None:
    code, out = run("online-endpoint", "regenerate-keys", "-n", "my-endpoint", "--key-type", "tertiary")
    assert code == 2 and "'tertiary' is not a key; use primary or secondary" in out


def test_get_logs_has_one_container_and_needs_a_line_or_more() -> None:
    code, out = run("online-deployment", "get-logs", "-n", "blue", "-e", "my-endpoint", "--container",
                    "storage-initializer")
    assert code == 2 and "one container, inference-server" in out
    code, out = run("online-deployment", "get-logs", "-n", "blue", "-e", "my-endpoint", "--lines", "0")
    assert code == 2 and "--lines" in out


def test_deployment_create_takes_az_flags() -> None:
    """--endpoint and --endpoint-name are one flag; --skip-script-validation is accepted; -f is required."""
    code, out = run("online-deployment", "create", "-n", "blue", "--endpoint", "my-endpoint")
    assert code == 2 and "--file" in out


# ---- request bodies -----------------------------------------------------------------------------------


def _deployment_files(root: Path) -> Path:
    (root / "onlinescoring").mkdir()
    (root / "onlinescoring" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    (root / "model").mkdir()
    (root / "model" / "model.pkl").write_bytes(b"\x80\x04N.")
    (root / "conda.yml").write_text("name: scoring\ndependencies:\n  - python=3.11\n")
    spec = root / "blue.yml"
    spec.write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n"
        "name: blue\nendpoint_name: my-endpoint\n"
        "model:\n  path: model\n"
        "code_configuration:\n  code: onlinescoring\n  scoring_script: score.py\n"
        "environment:\n  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest\n  conda_file: conda.yml\n"
        "instance_type: Standard_DS3_v2\ninstance_count: 1\n")
    return spec


def test_a_local_deployment_keeps_absolute_paths_and_inlines_its_conda_file(tmp_path: Path) -> None:
    from cible.core.specs.azureml.loader import load_spec

    loaded = load_spec(_deployment_files(tmp_path), "online-deployment", set_overrides=["instance_count=2"])
    body = deployment_spec(None, loaded.entity, local=True)  # type: ignore[arg-type]  # local: nothing uploaded
    assert body["code_configuration"] == {"code": str(tmp_path / "onlinescoring"), "scoring_script": "score.py"}
    assert body["model"]["path"] == str(tmp_path / "model")
    assert body["environment"]["conda_file"] == {"name": "scoring", "dependencies": ["python=3.11"]}
    assert body["instance_count"] == 2 and "schema_" not in body and "$schema" not in body


def test_a_deployment_dict_is_read_against_the_working_folder(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    _deployment_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    given = {"name": "blue", "endpoint_name": "my-endpoint", "model": {"path": "model"},
             "code_configuration": {"code": "onlinescoring", "scoring_script": "score.py"},
             "environment": {"image": "python:3.11", "conda_file": "conda.yml"}, "instance_type": "Standard_DS3_v2",
             # what `get` adds: dropped, the spec models refuse unknown keys
             "provisioning_state": "Succeeded", "replicas": [], "generation": 3, "spec": {}, "local": True}
    body = deployment_spec(None, given, local=True)  # type: ignore[arg-type]
    assert body["model"]["path"] == str(tmp_path / "model") and "replicas" not in body


def test_an_endpoint_sends_its_traffic_only_when_it_sets_it() -> None:
    from cible.core.specs.azureml.loader import load_spec_text

    plain = load_spec_text("name: my-endpoint\nauth_mode: key\n", "online-endpoint").entity
    assert "traffic" not in endpoint_spec(plain) and "mirror_traffic" not in endpoint_spec(plain)
    split = load_spec_text("name: my-endpoint\ntraffic:\n  blue: 100\n", "online-endpoint").entity
    assert endpoint_spec(split)["traffic"] == {"blue": 100}
    shown = {"name": "my-endpoint", "auth_mode": "aml_token", "scoring_uri": "http://x/score", "metrics": {},
             "deployments": ["blue"], "local": False, "traffic": {"blue": 100}}
    assert endpoint_spec(shown) == {"name": "my-endpoint", "auth_mode": "aml_token", "tags": {},
                                    "traffic": {"blue": 100}}


# ---- waits ----------------------------------------------------------------------------------------------


class _Deployments:
    """Answers `get` with the next of the given states (the last one for good)."""

    def __init__(self, *states: str, reason: str | None = None) -> None:
        self.states, self.reason = list(states), reason

    def get(self, name: str, endpoint_name: str, local: bool = False) -> Resource:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return Resource({"name": name, "endpoint_name": endpoint_name, "provisioning_state": state,
                         "reason": self.reason if state == "Failed" else None, "local": local,
                         "replicas": [{"name": "r1", "ready": state == "Succeeded"}]})


def _created() -> Resource:
    return Resource({"name": "blue", "endpoint_name": "my-endpoint", "provisioning_state": "Creating",
                     "replicas": [{"name": "r1", "ready": False}]})


def test_a_create_waits_until_succeeded_and_says_each_change() -> None:
    seen: list[str] = []
    poller = DeploymentPoller(_Deployments("Creating", "Creating", "Succeeded"), _created(), local=False)  # type: ignore[arg-type]
    done = poller.wait(timeout=30, on_change=lambda d: seen.append(d["provisioning_state"]))
    assert done["provisioning_state"] == "Succeeded" and seen == ["Creating", "Succeeded"]


def test_a_failed_create_raises_its_reason_and_where_the_logs_are() -> None:
    ops = _Deployments("Creating", "Failed", reason="init() raised ValueError: no model")
    with pytest.raises(DeploymentFailedError) as caught:
        DeploymentPoller(ops, _created(), local=True).result(timeout=30)  # type: ignore[arg-type]
    assert "no model" in caught.value.message
    assert "cible online-deployment get-logs -n blue -e my-endpoint --local" in caught.value.message


def test_a_delete_waits_until_gone_within_its_deadline() -> None:
    answers = iter([{}, {}])

    def get() -> dict:
        try:
            return next(answers)
        except StopIteration:
            raise NotFoundError("gone") from None

    DeletePoller(get, "online endpoint 'e'").result(timeout=30)
    with pytest.raises(OperationTimeoutError, match="online endpoint 'e' is still being deleted"):
        DeletePoller(lambda: {}, "online endpoint 'e'").result(timeout=0.3)
