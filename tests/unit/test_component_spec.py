"""Command and pipeline components (`load_spec(path, "component")`), as Azure's examples write them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cible.core.errors import InvalidSpecError
from cible.core.models import CommandComponent, ComponentInput, PipelineComponent
from cible.core.models.components import input_value_problem
from cible.core.specs.azureml.loader import load_spec, load_spec_dict


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


@pytest.fixture
def load(tmp_path, monkeypatch):
    """load(text, kind="component", files={...}) -> LoadedSpec of ./component.yml (messages say component.yml:L:C)."""
    monkeypatch.chdir(tmp_path)

    def _load(text: str, kind: str = "component", files: dict[str, str] | None = None, name: str = "component.yml"):
        write(tmp_path, {**(files or {}), name: text})
        return load_spec(name, kind)

    return _load


@pytest.fixture
def load_error(load):
    def _load_error(text: str, kind: str = "component", files: dict[str, str] | None = None) -> str:
        with pytest.raises(InvalidSpecError) as info:
            load(text, kind, files)
        return info.value.message

    return _load_error


TRAIN = """
    $schema: https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json
    name: train
    display_name: Train
    version: 10
    type: command
    inputs:
      training_data:
        type: uri_folder
      max_epocs:
        type: integer
      learning_rate:
        type: number
        default: 0.01
      learning_rate_schedule:
        type: string
        default: time-based
    outputs:
      model_output:
        type: uri_folder
    code: ./train_src
    environment: azureml:AzureML-sklearn-0.24-ubuntu18.04-py37-cpu@latest
    command: >-
      python train.py
      --training_data ${{inputs.training_data}}
      --max_epocs ${{inputs.max_epocs}}
      --learning_rate ${{inputs.learning_rate}}
      --learning_rate_schedule ${{inputs.learning_rate_schedule}}
      --model_output ${{outputs.model_output}}
"""


def test_azure_train_component(tmp_path, load):
    spec = load(TRAIN, files={"train_src/": ""})
    component = spec.entity
    assert isinstance(component, CommandComponent)
    assert component.version == "10"  # `version: 10` is text, as Azure keeps it
    assert component.is_deterministic is True
    assert component.code == str((tmp_path / "train_src").resolve())
    assert component.inputs["max_epocs"].type == "integer" and component.inputs["max_epocs"].optional is False
    assert component.inputs["learning_rate"].default == 0.01
    assert component.outputs["model_output"].type == "uri_folder"
    assert spec.warnings == []


def test_names_azure_ships_are_accepted(load):
    # Azure's docs say lowercase and '_'; its examples use capitals and '-' (6a_tf_hello_world, 5a).
    for name in ("TF-hello-world", "Hello_Python_World", "componentA", "r-iris-example"):
        text = f"name: {name}\nversion: 1\nenvironment: {{image: python}}\ncommand: echo hi\n"
        assert load(text).entity.name == name


def test_sweep_component_defaults_and_yaml_numbers(load):
    component = load("""
        name: train_model
        version: 1
        type: command
        inputs:
          data: {type: uri_folder}
          c_value: {type: number, default: 1.0}
          shrinking: {type: boolean, default: false}
          tol: {type: number, default: 1e-3}
          max_iter: {type: integer, default: -1}
        outputs:
          model_output: {type: uri_folder}
        environment: azureml://registries/azureml/environments/sklearn-1.5/labels/latest
        command: >-
          python train.py --data ${{inputs.data}} --C ${{inputs.c_value}} --tol ${{inputs.tol}}
          --shrinking ${{inputs.shrinking}} --max_iter ${{inputs.max_iter}} --model_output ${{outputs.model_output}}
    """).entity
    assert component.inputs["tol"].default == "1e-3"  # PyYAML leaves it text; it is still a number


def test_component_compute_is_accepted_and_warned(load):
    spec = load("""
        type: command
        name: TF-hello-world
        version: 1
        compute: azureml:gpu-cluster
        environment: azureml:AzureML-tensorflow-2.4-ubuntu18.04-py37-cuda11-gpu
        command: echo $TF_CONFIG
        resources:
          instance_count: 2
        distribution:
          type: tensorflow
          worker_count: 2
    """)
    assert spec.entity.distribution.worker_count == 2
    assert spec.warnings == ["'compute' is accepted but not acted on by cible yet"]
    assert spec.locations[spec.warnings[0]] == "component.yml:4:1"


def test_input_type_is_required(load_error):
    message = load_error("environment: {image: python}\ncommand: echo\ninputs:\n  x:\n    default: 1\n")
    assert message == "component.yml:4:3: missing required key 'type' in inputs.x"


def test_reserved_and_malformed_port_names(load_error):
    message = load_error("""
        environment: {image: python}
        command: echo ${{inputs.path}}
        inputs:
          path: {type: string}
          bad-name: {type: string}
        outputs:
          Path: {type: uri_folder}
    """)
    assert "component.yml:4:9: inputs.path: 'path' is reserved by Azure" in message
    assert "component.yml:5:13: inputs.bad-name: 'bad-name' is not a port name" in message
    assert "outputs.Path: 'Path' is reserved by Azure" in message


@pytest.mark.parametrize(("port", "expected"), [
    ("{type: string, min: 1}", "inputs.x.min: 'min' applies to number and integer inputs, not string"),
    ("{type: integer, enum: [1, 2]}", "inputs.x.enum: 'enum' applies to string inputs, not integer"),
    ("{type: integer, min: 5, max: 1}", "inputs.x.min: min 5 is above max 1"),
    ("{type: number, min: 0, max: 1, default: 2}", "inputs.x.default: the default: 2 is above the input's max 1"),
    ("{type: integer, default: 1.5}", "inputs.x.default: the default: 1.5 is not an integer"),
    ("{type: string, enum: [a, b], default: c}", "inputs.x.default: the default: 'c' is not one of a, b"),
    ("{type: boolean, default: maybe}", "inputs.x.default: the default: 'maybe' is not a boolean (true or false)"),
    ("{type: tensor}", "inputs.x.type: 'tensor' is not one of number, integer"),
])
def test_input_declarations(load_error, port, expected):
    message = load_error(f"environment: {{image: python}}\ncommand: echo\ninputs:\n  x: {port}\n")
    assert expected in message


def test_command_must_name_declared_ports(load_error):
    message = load_error("""
        environment: {image: python}
        command: python a.py ${{inputs.missing}} ${{outputs.nowhere}} ${{inputs.opt}}
        inputs:
          opt: {type: string, optional: true}
    """)
    assert "command: the command refers to input 'missing' which is not defined" in message
    assert "command: the command refers to output 'nowhere' which is not defined" in message
    assert "optional input 'opt' is used outside $[[ ]]; wrap it in $[[ ... ]]" in message


def test_optional_inputs_inside_optional_blocks(load):
    component = load("""
        environment: {image: python}
        command: python a.py $[[--opt ${{inputs.opt}}]] $[[--short $[[inputs.other]]]]
        inputs:
          opt: {type: string, optional: true}
          other: {type: integer, optional: true}
    """).entity
    assert component.inputs["opt"].optional is True


def test_additional_includes_and_environment_file(tmp_path, load):
    spec = load(
        """
        name: with_includes
        code: ./src
        additional_includes:
          - ../common/utils
          - ./library.zip
        environment: file:./env/env.yml
        command: python main.py
        """,
        files={"src/": "", "../common/utils/": "", "library/": "",
               "env/env.yml": "image: python:3.11\nconda_file: conda.yml\n", "env/conda.yml": "dependencies: [pip]\n"},
    )
    component = spec.entity
    assert component.additional_includes == [str((tmp_path / "../common/utils").resolve()),
                                             str((tmp_path / "library.zip").resolve())]  # Azure zips `library`
    assert component.environment.conda_file == str((tmp_path / "env" / "conda.yml").resolve())


def test_missing_code_names_its_line(load_error):
    message = load_error("environment: {image: python}\ncommand: echo\ncode: ./nowhere\n")
    assert message.startswith("component.yml:3:7: code: code folder './nowhere' does not exist")


def test_unknown_component_type(load_error):
    assert load_error("type: parallel\ncommand: echo\n") == (
        "component.yml:1:7: type: 'parallel' is not a component type cible runs; command, pipeline or spark")


def test_component_dict_without_a_file(tmp_path):
    component = load_spec_dict({"type": "command", "name": "c", "version": 3, "command": "echo",
                                "environment": {"image": "python"}, "outputs": {"o": None}}, "component").entity
    assert component.version == "3"
    assert component.outputs["o"].type == "uri_folder"  # `o:` is a default output, kept in a dump
    assert component.model_dump(mode="json", exclude_none=True)["outputs"] == {"o": {"type": "uri_folder"}}


# ---- pipeline components -----------------------------------------------------------------

TRAIN_PIPELINE = """
    $schema: https://azuremlschemas.azureedge.net/latest/pipelineComponent.schema.json
    type: pipeline
    name: train_pipeline_component
    display_name: train_pipeline_component
    inputs:
      training_data:
        type: uri_folder  # default/path is not supported for data type
      training_max_epochs:
        type: integer
        optional: true
      training_learning_rate:
        type: number
      learning_rate_schedule:
        type: string
        default: 'time-based'
      train_node_compute:
        type: string
        default: cpu-cluster
    outputs:
      trained_model:
        type: uri_folder
    jobs:
      train_job:
        type: command
        component: ./train/train.yml
        compute: ${{parent.inputs.train_node_compute}}
        inputs:
          training_data: ${{parent.inputs.training_data}}
          max_epocs: ${{parent.inputs.training_max_epochs}}
          learning_rate: ${{parent.inputs.training_learning_rate}}
          learning_rate_schedule: ${{parent.inputs.learning_rate_schedule}}
        outputs:
          model_output: ${{parent.outputs.trained_model}}
"""


def test_pipeline_component_inlines_its_components_from_their_folders(tmp_path, load):
    spec = load(TRAIN_PIPELINE, files={"train/train.yml": TRAIN, "train/train_src/": ""})
    component = spec.entity
    assert isinstance(component, PipelineComponent)
    step = component.jobs["train_job"]
    assert isinstance(step.component, CommandComponent)
    assert step.component.code == str((tmp_path / "train" / "train_src").resolve())  # the component's folder
    assert component.inputs["training_max_epochs"].optional is True


def test_pipeline_component_data_inputs_take_no_default(load_error):
    message = load_error("""
        type: pipeline
        inputs:
          data: {type: uri_folder, default: ./data}
        jobs:
          a: {command: echo, environment: {image: python}}
    """)
    assert "inputs.data.default: a pipeline component's uri_folder input cannot have a default" in message


def test_errors_in_an_included_component_name_its_file(load_error):
    message = load_error(TRAIN_PIPELINE, files={"train/train.yml": "command: echo\nenvironment: {image: python}\n"
                                                                   "inputs: {x: {type: integer, max: one}}\n"})
    assert message.startswith("train/train.yml:3:")
    assert "inputs.x.max" in message


def test_a_missing_component_file_names_the_step(load_error):
    message = load_error(TRAIN_PIPELINE)
    assert message.startswith("component.yml:25:5: jobs.train_job.component: component file './train/train.yml' "
                              "not found")


def test_component_files_that_include_themselves(load_error):
    nested = """
        type: pipeline
        jobs:
          again: {type: pipeline, component: ./component.yml}
    """
    message = load_error(nested)
    assert "component file './component.yml' includes itself (component.yml -> component.yml)" in message


def test_input_value_problems():
    integer = ComponentInput(type="integer", min=1, max=10)
    assert input_value_problem(integer, 3) is None
    assert input_value_problem(integer, "7") is None  # a value bound from text
    assert input_value_problem(integer, True) == "True is not an integer"
    assert input_value_problem(integer, 11) == "11 is above the input's max 10"
    number = ComponentInput(type="number")
    assert input_value_problem(number, "1e-3") is None
    assert input_value_problem(number, "nan") == "'nan' is not a number"
    boolean = ComponentInput(type="boolean")
    assert input_value_problem(boolean, "False") is None and input_value_problem(boolean, 1) is not None
    data = ComponentInput(type="uri_folder")
    assert input_value_problem(data, {"type": "uri_folder", "path": "x"}) is None
    assert input_value_problem(data, 3) is not None
    assert input_value_problem(ComponentInput(type="string"), {"a": 1}) == "a string input takes a literal value, not a mapping"


def test_a_component_without_environment_runs_on_the_node_python(load):
    # Azure requires an environment; cible, as for command jobs, runs without one.
    assert load("name: bare\ncommand: python a.py\n").entity.environment is None
