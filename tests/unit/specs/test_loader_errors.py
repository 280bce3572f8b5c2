"""Validation problems point at file:line:col with the field path; --set and --name overrides."""

from __future__ import annotations

import pytest

from cible.core.errors import InvalidSpecError
from cible.core.specs.azureml.loader import load_spec_dict
from cible.core.specs.azureml.overrides import apply_set_overrides


def test_unknown_key_has_location_allowed_keys_and_suggestion(load_error):
    error = load_error(
        """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        environment: azureml:AzureML-sklearn-1.5@latest
        comand: echo hi
        """
    )
    missing, unknown = error.message.splitlines()
    assert missing == "job.yml:1:1: missing required key 'command' in command job"
    assert unknown.startswith("job.yml:3:1: unknown key 'comand' in command job; allowed keys: code, command, compute,")
    assert unknown.endswith("did you mean 'command'?")
    assert "$schema" not in unknown.split("allowed keys:")[1]
    assert error.details[1] == {"file": "job.yml", "line": 3, "column": 1, "field": "comand",
                                "message": unknown.split(": ", 1)[1]}


def test_unknown_nested_key_names_its_parent(load_error):
    error = load_error("command: echo\ninputs:\n  data:\n    path: https://x/y\n    mdoe: download\n")
    assert error.message.startswith("job.yml:5:5: unknown key 'mdoe' in inputs.data; allowed keys: ")
    assert "did you mean 'mode'?" in error.message
    assert error.details[0]["field"] == "inputs.data.mdoe"


def test_unknown_key_inside_discriminated_union(load_error):
    error = load_error("command: echo\ndistribution:\n  type: pytorch\n  process_count: 2\n")
    assert "job.yml:4:3: unknown key 'process_count' in distribution; allowed keys: " in error.message
    assert "did you mean 'process_count_per_instance'?" in error.message


def test_bad_enum_value_names_field_and_choices(load_error):
    error = load_error("command: echo\ninputs:\n  data:\n    path: https://x/y\n    mode: rw_mount\n")
    assert error.message == (
        "job.yml:5:11: inputs.data.mode: 'rw_mount' is not one of ro_mount, download, direct, "
        "eval_mount, eval_download, mount"
    )
    assert error.code == "InvalidSpec"


def test_bad_distribution_type(load_error):
    error = load_error("command: echo\ndistribution:\n  type: horovod\n")
    assert error.message == "job.yml:3:9: distribution.type: 'horovod' is not one of pytorch, mpi, tensorflow, ray"


def test_missing_command_points_at_root(load_error):
    error = load_error("environment: azureml:x@latest\n")
    assert error.message == "job.yml:1:1: missing required key 'command' in command job"


def test_empty_command_is_rejected(load_error):
    error = load_error("command: '  '\n")
    assert error.message == "job.yml:1:10: command: 'command' must not be empty"


def test_several_errors_are_all_reported_in_file_order(load_error):
    error = load_error(
        """
        command: echo
        limits:
          timeout: -5
        resources:
          instance_count: zero
        outputs:
          o:
            mode: ro_mount
        """
    )
    lines = error.message.splitlines()
    assert [line.split(": ")[0] for line in lines] == ["job.yml:3:12", "job.yml:5:19", "job.yml:8:11"]
    assert [d["field"] for d in error.details] == ["limits.timeout", "resources.instance_count", "outputs.o.mode"]
    assert all(set(d) == {"file", "line", "column", "field", "message"} for d in error.details)


def test_invalid_yaml_reports_position(load_error):
    error = load_error("command: echo\ninputs: [1\nx: 2\n")
    assert error.message.startswith("job.yml:3:2: invalid YAML:")


def test_non_mapping_and_empty_specs(load_error):
    assert "must be a mapping" in load_error("- a\n- b\n").message
    assert "the spec is empty" in load_error("").message


def test_missing_spec_file():
    from cible.core.specs.azureml.loader import load_spec

    with pytest.raises(InvalidSpecError, match="no such file"):
        load_spec("/nonexistent/job.yml", "job")


def test_queue_settings_are_case_insensitive(load):
    spec = load("command: echo\nqueue_settings:\n  job_tier: Standard\n  priority: High\n")
    assert spec.entity.queue_settings.job_tier == "standard"
    assert spec.entity.queue_settings.priority == "high"


def test_accepted_but_ignored_keys_warn_once_each(load):
    spec = load(
        """
        command: echo
        services:
          my_ssh: {type: ssh}
        identity:
          type: user_identity
        queue_settings:
          job_tier: spot
          priority: high
        distribution:
          type: pytorch
          process_count_per_instance: 2
        resources:
          instance_count: 2
          instance_type: Standard_NC24
          shm_size: 8g
          docker_args: --ipc=host
          locations: [westus]
          max_instance_count: 4
          properties: {a: b}
        environment:
          image: python
          os_type: windows
          inference_config:
            liveness_route: {port: 5001, path: /}
        """
    )
    assert spec.warnings == [
        f"'{key}' is accepted but not acted on by cible yet"
        for key in ("services", "identity", "queue_settings.priority",
                    "resources.shm_size", "resources.docker_args", "resources.locations",
                    "resources.max_instance_count", "resources.properties", "environment.os_type: windows",
                    "environment.inference_config")
    ]
    assert spec.entity.resources.instance_count == 2  # still validated and kept
    assert spec.entity.distribution.process_count_per_instance == 2


def test_ignored_key_warnings_read_the_same_from_the_file_and_from_the_request_body(load, write):
    # The CLI prints the file's warnings, then the server's job warnings it has not printed yet (equal text):
    # the server, loading the body the client sends, must word them identically or each prints twice.
    write("env.yml", "image: python\nos_type: windows\n")
    spec = load("command: echo\nservices:\n  my_ssh: {type: ssh}\nenvironment: file:env.yml\n")
    body = spec.entity.model_dump(mode="json", exclude_none=True)  # what the client sends
    server = load_spec_dict(body, "job", source="request body")
    assert spec.warnings == server.warnings == [
        "'services' is accepted but not acted on by cible yet",
        "'environment.os_type: windows' is accepted but not acted on by cible yet",
    ]


def test_linux_os_type_and_plain_resources_do_not_warn(load):
    spec = load("command: echo\nresources: {instance_count: 1}\nenvironment: {image: python, os_type: linux}\n")
    assert spec.warnings == []


# ---- --set and --name -----------------------------------------------------------------


def test_set_overrides_nested_new_and_typed_values(load):
    spec = load(
        "command: echo\nexperiment_name: a\ninputs:\n  data:\n    path: https://x/y\n",
        set_overrides=[
            "limits.timeout=30",
            "tags.owner=me",
            "experiment_name=x",
            "inputs.data.path=azureml:heart-classifier-train@latest",
            "inputs.flag=True",
            "command=echo a: b",
        ],
    )
    job = spec.entity
    assert job.limits.timeout == 30
    assert job.tags == {"owner": "me"}
    assert job.experiment_name == "x"
    assert job.inputs["data"].path == "azureml:heart-classifier-train@latest"
    assert job.inputs["flag"] is True
    assert job.command == "echo a: b"


def test_set_error_is_attributed_to_the_override(load_error):
    error = load_error("command: echo\nlimits:\n  timeout: 10\n", set_overrides=["limits.timeout=-1"])
    assert error.message == "job.yml (from --set limits.timeout=-1): limits.timeout: Input should be greater than 0 (got -1)"
    assert error.details[0]["line"] is None


def test_set_without_equals_is_an_error(load_error):
    error = load_error("command: echo\n", set_overrides=["limits.timeout"])
    assert "--set 'limits.timeout'" in error.message and "<path>=<value>" in error.message


def test_set_into_a_scalar_is_an_error(load_error):
    error = load_error("command: echo\n", set_overrides=["command.x=1"])
    assert "'command' is a str, not a mapping" in error.message


def test_name_option_overrides_name(load):
    assert load("command: echo\nname: a\n", name="b").entity.name == "b"


def test_apply_set_overrides_returns_a_new_dict():
    data = {"a": {"b": 1}, "items": [1, 2]}
    out = apply_set_overrides(data, ["a.b=2", "a.c.d=[1, 2]", "items.1=x", "e="])
    assert out == {"a": {"b": 2, "c": {"d": [1, 2]}}, "items": [1, "x"], "e": ""}
    assert data == {"a": {"b": 1}, "items": [1, 2]}
    with pytest.raises(InvalidSpecError, match="not an index"):
        apply_set_overrides(data, ["items.5=x"])
    with pytest.raises(InvalidSpecError, match="empty segment"):
        apply_set_overrides(data, ["a..b=1"])


def test_slurm_properties_are_acted_on_and_not_warned_of(load):
    spec = load("""
        command: echo
        environment: {image: python}
        resources: {properties: {slurm: {qos: normal}}}
        """)
    assert spec.warnings == []
    mixed = load("""
        command: echo
        environment: {image: python}
        resources: {properties: {slurm: {qos: normal}, AISuperComputer: {}}}
        """)
    assert mixed.warnings == ["'resources.properties' is accepted but not acted on by cible yet"]
