"""Azure's hello-world family of command jobs, written inline, load as Azure reads them."""

from __future__ import annotations

import datetime as dt

import pytest

from cible.core.models import CommandJob, Environment, JobInput, JobOutput
from cible.core.specs.azureml.loader import load_spec_dict, load_spec_text


def test_hello_world_echo(load):
    spec = load(
        """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        command: echo "hello world"
        environment:
          image: library/python:latest
        """
    )
    job = spec.entity
    assert isinstance(job, CommandJob)
    assert job.type == "command"
    assert job.command == 'echo "hello world"'
    assert isinstance(job.environment, Environment)
    assert job.environment.image == "library/python:latest"
    assert job.schema_ == "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json"
    assert spec.warnings == []
    assert spec.path is not None and spec.path.name == "job.yml"


def test_curated_environment_reference_stays_a_string(load):
    job = load(
        """
        command: echo "hello world"
        environment: azureml:AzureML-sklearn-1.5@latest
        compute: azureml:cpu-cluster
        """
    ).entity
    assert job.environment == "azureml:AzureML-sklearn-1.5@latest"
    assert job.compute == "azureml:cpu-cluster"


def test_environment_variables_are_text(load):
    job = load(
        """
        command: echo $hello_env_var
        environment: azureml:AzureML-sklearn-1.5@latest
        environment_variables:
          hello_env_var: "hello world"
          FLAG: yes
          COUNT: 3
          RATIO: 0.5
        """
    ).entity
    assert job.environment_variables == {
        "hello_env_var": "hello world", "FLAG": "True", "COUNT": "3", "RATIO": "0.5",
    }


def test_environment_variable_must_be_scalar(load_error):
    error = load_error(
        """
        command: echo
        environment_variables:
          BAD: [1, 2]
        """
    )
    assert "environment variable 'BAD' must be a scalar" in error.message
    assert "job.yml:3:" in error.message


def test_literal_inputs_keep_their_yaml_types(load):
    job = load(
        """
        command: python hello.py --a ${{inputs.hello_string}} --b ${{inputs.hello_number}}
        inputs:
          hello_string: "hello world"
          hello_number: 42
          hello_float: 1.0
          hello_boolean: False
          hello_date: 2022-01-01
        """
    ).entity
    assert job.inputs == {
        "hello_string": "hello world", "hello_number": 42, "hello_float": 1.0,
        "hello_boolean": False, "hello_date": "2022-01-01",
    }
    assert type(job.inputs["hello_boolean"]) is bool
    assert type(job.inputs["hello_number"]) is int


def test_yaml_11_scalars_follow_safe_load(load):
    job = load(
        """
        command: echo
        inputs:
          on_flag: yes
          leading_zero: 01
          not_octal: 08
          small: 1e-3
          small_float: 1.0e-3
        tags:
          released: 2022-01-01
          count: 01
        """
    ).entity
    assert job.inputs["on_flag"] is True
    assert job.inputs["leading_zero"] == 1
    assert job.inputs["not_octal"] == "08"
    assert job.inputs["small"] == "1e-3"  # YAML 1.1: no dot -> not a float
    assert job.inputs["small_float"] == pytest.approx(0.001)
    assert job.tags == {"released": "2022-01-01", "count": "1"}


def test_default_outputs_folder_and_named_output(load):
    job = load(
        """
        command: echo "hello world" > ./outputs/helloworld.txt && echo hi > ${{outputs.hello_output}}/x.txt
        outputs:
          hello_output:
          registered:
            type: uri_folder
            mode: upload
            path: azureml://datastores/workspaceblobstore/paths/${{name}}/${{output_name}}
        """
    ).entity
    assert job.outputs["hello_output"] is None  # empty value: default uri_folder
    registered = job.outputs["registered"]
    assert isinstance(registered, JobOutput)
    assert registered.mode == "upload"
    assert registered.path.endswith("/${{name}}/${{output_name}}")  # resolved at submission, not load


def test_code_folder_resolves_against_yaml_directory(tmp_path, write):
    (tmp_path / "specs" / "src").mkdir(parents=True)
    (tmp_path / "specs" / "src" / "hello.py").write_text("print('hi')\n")
    from cible.core.specs.azureml.loader import load_spec

    job = load_spec(write("specs/job.yml", "command: python hello.py\ncode: src\n"), "job").entity
    assert job.code == str((tmp_path / "specs" / "src").resolve())


def test_file_prefix_on_code_is_stripped(tmp_path, load):
    (tmp_path / "src").mkdir()
    job = load("command: ls\ncode: file:./src\n").entity
    assert job.code == str((tmp_path / "src").resolve())


def test_missing_code_folder_is_an_error_with_location(load_error):
    error = load_error("command: python hello.py\n\ncode: ./nope\n")
    assert error.message.startswith("job.yml:3:7: code: code folder './nope' does not exist")
    assert error.details[0]["line"] == 3


def test_local_input_path_resolves_and_remote_paths_are_kept(tmp_path, load):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "iris.csv").write_text("a,b\n")
    job = load(
        """
        command: python train.py --data ${{inputs.iris}}
        inputs:
          iris:
            type: uri_file
            path: data/iris.csv
          remote:
            type: uri_file
            path: https://azuremlexamples.blob.core.windows.net/datasets/iris.csv
          blob:
            path: wasbs://datasets@azuremlexamples.blob.core.windows.net/iris.csv
          asset:
            path: azureml:iris@latest
            mode: download
        """
    ).entity
    assert job.inputs["iris"].path == str((tmp_path / "data" / "iris.csv").resolve())
    assert job.inputs["remote"].path.startswith("https://")
    assert job.inputs["blob"].path.startswith("wasbs://")
    assert job.inputs["blob"].type == "uri_folder"
    assert job.inputs["asset"].path == "azureml:iris@latest"
    assert job.inputs["asset"].mode == "download"


def test_missing_local_input_path_is_an_error(load_error):
    error = load_error(
        """
        command: echo
        inputs:
          data:
            path: ./missing
        """
    )
    assert "job.yml:4:11: inputs.data.path: input 'data' path './missing' does not exist" in error.message


def test_unsupported_uri_scheme_in_input_path(load_error):
    error = load_error("command: echo\ninputs:\n  d:\n    path: s3://bucket/x\n")
    assert "job.yml:4:11" in error.message and "unsupported URI scheme 's3'" in error.message


def test_hello_iris_literal_quirk_makes_two_string_inputs(load):
    job = load(
        """
        command: python main.py --iris-csv ${{inputs.iris_csv}}
        inputs:
          type: uri_file
          iris_csv: https://azuremlexamples.blob.core.windows.net/datasets/iris.csv
        environment: azureml:AzureML-sklearn-1.5@latest
        """
    ).entity
    assert job.inputs == {
        "type": "uri_file",
        "iris_csv": "https://azuremlexamples.blob.core.windows.net/datasets/iris.csv",
    }


def test_mapping_input_is_always_an_input_object(load):
    job = load("command: echo\ninputs:\n  x: {type: string, default: a, optional: true}\n").entity
    assert isinstance(job.inputs["x"], JobInput)
    assert job.inputs["x"].optional is True


def test_file_environment_is_loaded_inline_with_its_own_paths(tmp_path, write, load):
    write("environments/env.yml", "image: python:3.11\nconda_file: conda.yml\n")
    write("environments/conda.yml", "dependencies: [python=3.11]\n")
    job = load("command: echo\nenvironment: file:./environments/env.yml\n").entity
    assert isinstance(job.environment, Environment)
    assert job.environment.image == "python:3.11"
    assert job.environment.conda_file == str((tmp_path / "environments" / "conda.yml").resolve())


def test_file_environment_errors_point_into_that_file(write, load_error):
    write("env.yml", "image: python\nimagee: x\n")
    error = load_error("command: echo\nenvironment: file:env.yml\n")
    assert "env.yml:2:1: unknown key 'imagee' in environment" in error.message


def test_missing_file_environment(load_error):
    error = load_error("command: echo\nenvironment: file:./nope.yml\n")
    assert error.message.startswith("job.yml:2:14: environment: environment file 'file:./nope.yml' not found")


def test_inline_environment_with_inline_conda_mapping(load):
    job = load(
        """
        command: echo
        environment:
          image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04
          conda_file:
            name: env
            dependencies: [python=3.10, {pip: [numpy]}]
        """
    ).entity
    assert job.environment.conda_file["dependencies"][1] == {"pip": ["numpy"]}


def test_read_only_show_fields_are_accepted(load):
    job = load(
        """
        command: echo
        name: happy_cat_123
        status: Completed
        id: azureml:/subscriptions/x/resourceGroups/y/workspaces/z/jobs/happy_cat_123
        creation_context: {created_by: me}
        properties: {ContentSnapshotId: abc}
        """
    ).entity
    assert job.status == "Completed" and job.name == "happy_cat_123"


def test_type_command_is_case_insensitive_and_default(load):
    assert load("type: Command\ncommand: echo\n").entity.type == "command"


def test_parallel_jobs_are_not_supported_yet(load_error):
    error = load_error("command: echo\ntype: parallel\n")
    assert error.message == ("job.yml:2:7: type: 'parallel' jobs are not supported by cible yet; command, sweep, "
                             "pipeline, automl and spark jobs can run")


AUTOML = """type: automl
task: classification
target_column_name: y
training_data: {type: mltable, path: ./train}
"""


def test_an_automl_jobs_local_data_is_resolved_against_its_file(load, tmp_path):
    (tmp_path / "train").mkdir()
    job = load(AUTOML + "primary_metric: AUC_weighted\n").entity
    assert job.type == "automl" and job.training_data.path == str(tmp_path / "train")
    assert job.primary_metric == "AUC_weighted"


def test_an_automl_jobs_missing_data_folder_and_a_metric_of_another_task_point_at_their_keys(load_error, tmp_path):
    assert load_error(AUTOML).message.startswith("job.yml:4:38: training_data.path: training_data path './train' "
                                                 "does not exist")
    (tmp_path / "train").mkdir()
    error = load_error(AUTOML + "primary_metric: r2_score\n")
    assert error.message.startswith("job.yml:5:17: primary_metric: 'r2_score' is not a primary metric of a "
                                    "classification task; use one of accuracy")


def test_text_without_base_dir_keeps_paths_unchecked():
    job = load_spec_text("command: echo\ncode: ./src\n", "job", source="stdin").entity
    assert job.code == "./src"


def test_dict_loading_reports_without_lines(tmp_path):
    (tmp_path / "src").mkdir()
    spec = load_spec_dict({"command": "echo", "code": "src", "services": {"a": {}}}, "job", base_dir=tmp_path)
    assert spec.entity.code == str((tmp_path / "src").resolve())
    assert spec.warnings == ["'services' is accepted but not acted on by cible yet"]
    assert spec.path is None


def test_dict_loading_error_has_field_but_no_line():
    from cible.core.errors import InvalidSpecError

    with pytest.raises(InvalidSpecError) as info:
        load_spec_dict({"command": "echo", "limits": {"timeout": 0}}, "job", source="request")
    assert info.value.message == "request: limits.timeout: Input should be greater than 0 (got 0)"
    assert info.value.details == [{"file": "request", "line": None, "column": None, "field": "limits.timeout",
                                   "message": "Input should be greater than 0 (got 0)"}]


def test_dates_in_yaml_are_strings_in_tags_not_dates(load):
    job = load("command: echo\ntags:\n  day: 2024-05-01\n").entity
    assert job.tags["day"] == "2024-05-01"
    assert not isinstance(job.tags["day"], dt.date)


def test_what_an_automl_job_asks_and_cible_does_not_do_is_warned_of_where_it_is_written(load, tmp_path):
    (tmp_path / "train").mkdir()
    loaded = load(AUTOML + "training: {enable_stack_ensemble: true, enable_vote_ensemble: false}\nlog_verbosity: info\n")
    assert loaded.warnings == ["'training.enable_stack_ensemble: true' is accepted but not acted on by cible yet",
                               "'log_verbosity' is accepted but not acted on by cible yet"]
    assert [loaded.located(w).split(": ")[0] for w in loaded.warnings] == ["job.yml:5:12", "job.yml:6:1"]
