"""${{ }} substitution, $[[ ]] optional blocks and output-path tokens."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from cible.core.errors import InvalidSpecError
from cible.core.specs.azureml.expressions import (
    check_command,
    format_literal,
    referenced,
    render_command,
    resolve_output_path,
)


def test_render_inputs_and_outputs_with_whitespace():
    out = render_command(
        "python train.py --data ${{inputs.data}} --lr ${{ inputs.lr }} --out ${{outputs.model}}",
        inputs={"data": "/mnt/in/data", "lr": "0.01"}, outputs={"model": "/mnt/out/model"},
    )
    assert out == "python train.py --data /mnt/in/data --lr 0.01 --out /mnt/out/model"


def test_values_are_not_expanded_again():
    assert render_command("echo ${{inputs.a}}", inputs={"a": "${{inputs.b}}"}, outputs={}) == "echo ${{inputs.b}}"


def test_optional_block_kept_when_input_present():
    template = "python x.py $[[--max ${{inputs.max}}]] --o ${{outputs.o}}"
    assert render_command(template, inputs={"max": "5"}, outputs={"o": "/o"}) == "python x.py --max 5 --o /o"


def test_optional_block_dropped_when_input_absent():
    template = "python x.py $[[--max ${{inputs.max}} --min ${{inputs.min}}]] --a ${{inputs.a}}"
    assert render_command(template, inputs={"a": "1", "max": "5"}, outputs={}) == "python x.py  --a 1"


def test_short_optional_form():
    template = "train --name $[[inputs.registered_model_name]]"
    assert render_command(template, inputs={"registered_model_name": "m"}, outputs={}) == "train --name m"
    assert render_command(template, inputs={}, outputs={}) == "train --name "


def test_multiline_optional_block():
    template = "python x.py\n$[[--flag\n  ${{inputs.f}}]]"
    assert render_command(template, inputs={"f": "v"}, outputs={}) == "python x.py\n--flag\n  v"


def test_absent_input_outside_block_is_an_error():
    with pytest.raises(InvalidSpecError, match=r"input 'missing' .*; defined inputs: a"):
        render_command("echo ${{inputs.missing}}", inputs={"a": "1"}, outputs={})


def test_absent_output_is_an_error():
    with pytest.raises(InvalidSpecError, match="output 'o'"):
        render_command("echo ${{outputs.o}}", inputs={}, outputs={})


@pytest.mark.parametrize("template", ["echo ${{parent.inputs.x}}", "echo ${{foo.bar}}", "echo ${{name}}"])
def test_unknown_namespace_or_malformed_is_an_error(template):
    with pytest.raises(InvalidSpecError):
        render_command(template, inputs={}, outputs={})


def test_search_space_only_when_given():
    template = "python train.py --lr ${{search_space.lr}}"
    assert render_command(template, inputs={}, outputs={}, search_space={"lr": "0.1"}) == "python train.py --lr 0.1"
    with pytest.raises(InvalidSpecError, match="unknown expression namespace 'search_space'"):
        render_command(template, inputs={}, outputs={})


def test_non_string_values_are_formatted_like_literals():
    assert render_command("echo ${{inputs.b}} ${{inputs.f}}", inputs={"b": True, "f": 1.0}, outputs={}) == "echo True 1.0"


def test_referenced_includes_optional_blocks():
    template = ("python x.py ${{inputs.a}} $[[--b ${{ inputs.b }}]] $[[inputs.c]] "
                "--o ${{outputs.o}} --lr ${{search_space.lr}}")
    assert referenced(template) == {("inputs", "a"), ("inputs", "b"), ("inputs", "c"), ("outputs", "o"),
                                    ("search_space", "lr")}
    assert referenced("echo hello") == set()


def test_check_command_accepts_defined_names():
    check_command("x ${{inputs.a}} $[[--b ${{inputs.b}}]] ${{outputs.o}}", inputs=["a"], outputs=["o"],
                  optional_inputs=["b"])


def test_check_command_lists_every_problem():
    with pytest.raises(InvalidSpecError) as info:
        check_command("x ${{inputs.zz}} ${{outputs.q}} ${{foo.bar}}", inputs=["a", "b"], outputs=["o"])
    lines = info.value.message.splitlines()
    assert lines[0] == "the command refers to input 'zz' which is not defined; defined inputs: a, b"
    assert lines[1] == "the command refers to output 'q' which is not defined; defined outputs: o"
    assert lines[2].startswith("unknown expression namespace 'foo'")


def test_check_command_optional_input_outside_block():
    with pytest.raises(InvalidSpecError, match=r"optional input 'b' is used outside \$\[\[ \]\]"):
        check_command("x ${{inputs.b}}", inputs=[], outputs=[], optional_inputs=["b"])


def test_check_command_undefined_input_inside_block_is_fine():
    check_command("x $[[--b ${{inputs.b}}]]", inputs=[], outputs=[])


def test_resolve_output_path_tokens():
    path = "azureml://datastores/${{default_datastore}}/paths/azureml/${{name}}/${{ output_name }}/"
    assert resolve_output_path(path, job_name="happy_cat", output_name="model") == (
        "azureml://datastores/workspaceblobstore/paths/azureml/happy_cat/model/")
    assert resolve_output_path("${{default_datastore}}", job_name="j", output_name="o",
                               default_datastore="mine") == "mine"
    with pytest.raises(InvalidSpecError, match=r"cannot be used in an output path"):
        resolve_output_path("x/${{inputs.a}}", job_name="j", output_name="o")


@pytest.mark.parametrize("value, text", [
    (True, "True"), (False, "False"), (1, "1"), (1.0, "1.0"), (None, ""), ("s", "s"),
    (dt.date(2022, 1, 1), "2022-01-01"),
])
def test_format_literal(value, text):
    assert format_literal(value) == text


def test_expressions_module_is_stdlib_only():
    code = ("import sys; import cible.core.specs.azureml.expressions; "
            "bad = {'pydantic', 'yaml'} & set(sys.modules); print(sorted(bad)); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
