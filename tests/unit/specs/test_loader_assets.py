"""Environment, model and data asset specs."""

from __future__ import annotations

from cible.core.models import Data, Environment, Model


def test_environment_with_image_and_conda_file(tmp_path, load):
    (tmp_path / "conda.yml").write_text("dependencies: [python=3.10]\n")
    spec = load(
        """
        $schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json
        name: docker-image-plus-conda-example
        version: 1
        image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04
        conda_file: conda.yml
        description: Environment created from a Docker image plus Conda environment.
        """,
        "environment",
    )
    env = spec.entity
    assert isinstance(env, Environment)
    assert env.version == "1"
    assert env.conda_file == str((tmp_path / "conda.yml").resolve())
    assert env.os_type == "linux"


def test_environment_build_context_resolves(tmp_path, load):
    (tmp_path / "docker-context").mkdir()
    env = load("name: e\nbuild:\n  path: docker-context\n", "environment").entity
    assert env.build.path == str((tmp_path / "docker-context").resolve())
    assert env.build.dockerfile_path == "Dockerfile"


def test_environment_missing_conda_file(load_error):
    error = load_error("name: e\nimage: python\nconda_file: ./conda.yml\n", "environment")
    assert error.message.startswith("job.yml:3:13: conda_file: conda file './conda.yml' does not exist")


def test_environment_needs_a_definition(load_error):
    error = load_error("name: e\nversion: 1\n", "environment")
    assert "at least one of 'image', 'build' or 'conda_file'" in error.message


def test_environment_windows_and_inference_config_warn(load):
    spec = load(
        "name: e\nimage: x\nos_type: Windows\ninference_config:\n  scoring_route: {port: 5001, path: /score}\n",
        "environment",
    )
    assert spec.entity.os_type == "windows"
    assert spec.warnings == [
        "'os_type: windows' is accepted but not acted on by cible yet",
        "'inference_config' is accepted but not acted on by cible yet",
    ]


def test_model_local_path_and_defaults(tmp_path, load):
    (tmp_path / "model").mkdir()
    model = load("name: local-file-example\npath: model\ndescription: Model created from local file.\n",
                 "model").entity
    assert isinstance(model, Model)
    assert model.type == "custom_model"
    assert model.path == str((tmp_path / "model").resolve())


def test_model_remote_paths_are_kept(load):
    for path in ("runs:/abc123/model", "azureml://jobs/j1/outputs/artifacts/paths/model/",
                 "azureml://datastores/workspaceblobstore/paths/m"):
        model = load(f"name: m\ntype: mlflow_model\npath: {path}\n", "model").entity
        assert model.path == path


def test_model_bad_type(load_error):
    error = load_error("name: m\npath: https://x/m.pkl\ntype: onnx_model\n", "model")
    assert error.message == "job.yml:3:7: type: 'onnx_model' is not one of custom_model, mlflow_model, triton_model"


def test_data_asset_defaults_and_required_path(tmp_path, load, load_error):
    (tmp_path / "data").mkdir()
    data = load("name: d\nversion: 2\npath: ./data\n", "data").entity
    assert isinstance(data, Data)
    assert data.type == "uri_folder" and data.version == "2"
    assert data.path == str((tmp_path / "data").resolve())
    assert load_error("name: d\n", "data").message == "job.yml:1:1: missing required key 'path' in data asset"
