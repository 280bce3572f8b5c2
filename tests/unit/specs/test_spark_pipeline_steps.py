"""Spark steps of pipelines (`type: spark`) and spark components: Azure's shapes load (a component file
inlined, its code resolved against its own folder), bad input is refused at the key at fault with its
file:line, and each step's child job is the Spark job Azure would run (serverless when it has resources
and no compute of its own)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cible.core.errors import InvalidSpecError
from cible.core.models.spark import SparkJob
from cible.core.models.spark_components import SparkComponent, SparkStep
from cible.core.planning.pipelines import StepView, decide_pipeline, reuse_key
from cible.core.specs.azureml.loader import load_spec, load_spec_dict

COMPONENT = """\
$schema: https://azuremlschemas.azureedge.net/latest/sparkComponent.schema.json
name: titanic_spark_component
type: spark
version: 1
display_name: Titanic-Spark-Component
code: ./src
entry:
  file: titanic.py
inputs:
  titanic_data:
    type: uri_file
    mode: direct
outputs:
  wrangled_data:
    type: uri_folder
    mode: direct
args: >-
  --titanic_data ${{inputs.titanic_data}} --wrangled_data ${{outputs.wrangled_data}}
conf:
  spark.driver.cores: 1
  spark.driver.memory: 2g
  spark.executor.cores: 2
  spark.executor.memory: 2g
  spark.dynamicAllocation.enabled: True
  spark.dynamicAllocation.minExecutors: 1
  spark.dynamicAllocation.maxExecutors: 4
"""

PIPELINE = """\
$schema: http://azureml/sdk-2-0/PipelineJob.json
type: pipeline
display_name: Titanic-Spark-CLI-Pipeline
description: Spark component for Titanic data in Pipeline
jobs:
  spark_job:
    type: spark
    component: ./components/spark-job-component.yml
    inputs:
      titanic_data:
        type: uri_file
        path: azureml://datastores/workspaceblobstore/paths/data/titanic.csv
        mode: direct
    outputs:
      wrangled_data:
        type: uri_folder
        path: azureml://datastores/workspaceblobstore/paths/data/wrangled/
        mode: direct
    identity:
      type: managed
    resources:
      instance_type: standard_e8s_v3
      runtime_version: "3.4"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """project(pipeline_text, component_text) -> the loaded ./pipeline.yml, its component in ./components/."""
    monkeypatch.chdir(tmp_path)

    def _load(pipeline: str = PIPELINE, component: str = COMPONENT, **files: str):
        folder = tmp_path / "components"
        (folder / "src").mkdir(parents=True, exist_ok=True)
        (folder / "src" / "titanic.py").write_text("print('titanic')\n")
        (folder / "spark-job-component.yml").write_text(textwrap.dedent(component))
        for name, text in files.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(textwrap.dedent(text))
        (tmp_path / "pipeline.yml").write_text(textwrap.dedent(pipeline))
        return load_spec("pipeline.yml", "job")

    return _load


def error(project, *args, **kwargs) -> str:
    with pytest.raises(InvalidSpecError) as info:
        project(*args, **kwargs)
    return info.value.message


def children(spec, default_compute=None, components=None, steps=None) -> dict[str, dict]:
    decision = decide_pipeline(spec, steps or {}, cancel_requested=False, default_compute=default_compute,
                               components=components)
    assert decision.error is None, decision.error
    return {launch.step: launch.spec for launch in decision.launch}


# ---- loading -----------------------------------------------------------------------------------


def test_azures_pipeline_with_a_spark_component_file_loads_with_the_component_inlined(project, tmp_path: Path):
    loaded = project()
    step = loaded.entity.jobs["spark_job"]
    assert isinstance(step, SparkStep) and isinstance(step.component, SparkComponent)
    component = step.component
    assert component.name == "titanic_spark_component" and component.version == "1"
    assert component.code == str(tmp_path / "components" / "src")  # against the component file's folder
    assert component.entry.file == "titanic.py"
    assert component.conf == {"spark.driver.cores": 1, "spark.driver.memory": "2g", "spark.executor.cores": 2,
                              "spark.executor.memory": "2g", "spark.dynamicAllocation.enabled": True,
                              "spark.dynamicAllocation.minExecutors": 1, "spark.dynamicAllocation.maxExecutors": 4}
    assert step.resources.instance_type == "standard_e8s_v3" and step.resources.runtime_version == "3.4"
    assert step.identity == {"type": "managed"} and step.compute is None
    assert loaded.warnings == ["'jobs.spark_job.identity' is accepted but not acted on by cible yet"]


def test_a_spark_component_file_loads_as_a_component(project, tmp_path: Path):
    project()
    component = load_spec(tmp_path / "components" / "spark-job-component.yml", "component").entity
    assert isinstance(component, SparkComponent)
    assert component.code == str(tmp_path / "components" / "src")
    assert component.inputs["titanic_data"].mode == "direct"


def test_an_inline_spark_step_loads_with_its_code_resolved(project, tmp_path: Path):
    loaded = project("""\
        type: pipeline
        inputs:
          data: {type: uri_file, path: ./data.csv}
        jobs:
          wrangle:
            type: spark
            code: ./components/src
            entry: {file: titanic.py}
            py_files: [helpers.py]
            conf: {spark.executor.instances: 2, spark.sql.shuffle.partitions: 8}
            args: --in ${{inputs.data}} --out ${{outputs.out}}
            inputs:
              data: ${{parent.inputs.data}}
            outputs:
              out: {type: uri_folder}
            compute: azureml:my-spark
        """, **{"data.csv": "a,b\n1,2\n", "components/src/helpers.py": "X = 1\n"})
    step = loaded.entity.jobs["wrangle"]
    assert isinstance(step, SparkStep) and step.component is None
    assert step.code == str(tmp_path / "components" / "src")
    assert step.conf == {"spark.executor.instances": 2, "spark.sql.shuffle.partitions": 8}
    assert loaded.entity.inputs["data"].path == str(tmp_path / "data.csv")


def test_a_registered_spark_component_is_accepted_and_checked_once_resolved():
    spec = load_spec_dict({"type": "pipeline", "jobs": {"s": {
        "type": "spark", "component": "azureml:titanic_spark_component:1",
        "inputs": {"titanic_data": {"type": "uri_file", "path": "azureml://datastores/workspaceblobstore/paths/t.csv"}},
        "resources": {"instance_type": "Standard_DS2_v2"}}}}, "job").entity
    registered = {**load_spec_dict(_component_dict(), "component").entity.model_dump(mode="json", exclude_none=True)}
    spec_of = children(spec, components={"azureml:titanic_spark_component:1": registered})["s"]
    assert spec_of["entry"] == {"file": "titanic.py"} and "compute" not in spec_of
    unresolved = decide_pipeline(spec, {}, cancel_requested=False, default_compute=None)
    assert unresolved.end == "Failed" and "component 'azureml:titanic_spark_component:1' is not resolved" in \
        unresolved.error["message"]


# ---- refused, at the key at fault ------------------------------------------------------------


def test_an_unknown_key_of_a_spark_step_is_named_with_its_line(project):
    message = error(project, PIPELINE + "    executor_count: 2\n")
    assert message.startswith("pipeline.yml:24:5: unknown key 'executor_count' in jobs.spark_job; allowed keys: ")


def test_a_bad_conf_value_of_a_step_is_named_with_its_line(project):
    message = error(project, PIPELINE + "    conf:\n      spark.executor.cores: many\n")
    assert message == ("pipeline.yml:25:7: jobs.spark_job.conf: spark.executor.cores: 'many' is not a whole number "
                       "of at least 1")


def test_a_bad_conf_value_of_a_component_file_is_named_in_that_file(project):
    message = error(project, component=COMPONENT.replace("spark.executor.memory: 2g", "spark.executor.memory: lots"))
    assert message == ("components/spark-job-component.yml:20:3: conf: spark.executor.memory: 'lots' is not a size "
                       "like '2g' or '512m'")


def test_args_naming_an_undeclared_input_are_refused_in_the_component(project):
    message = error(project, component=COMPONENT.replace("${{inputs.titanic_data}}", "${{inputs.titanic}}"))
    assert message.startswith("components/spark-job-component.yml:17:7: args: the command refers to input 'titanic' "
                              "which is not defined; defined inputs: titanic_data")


def test_args_of_an_inline_step_name_its_own_ports(project):
    message = error(project, """\
        type: pipeline
        jobs:
          s:
            type: spark
            code: ./components/src
            entry: {file: titanic.py}
            args: --out ${{outputs.result}}
            resources: {instance_type: Standard_DS2_v2}
        """)
    assert message.startswith("pipeline.yml:7:11: jobs.s.args: the command refers to output 'result' which is "
                              "not defined")


def test_the_entry_file_must_be_in_the_components_code_folder(project):
    message = error(project, component=COMPONENT.replace("file: titanic.py", "file: missing.py"))
    assert message.startswith("components/spark-job-component.yml:8:9: entry.file: 'missing.py' not found in the "
                              "code folder ")


def test_the_entry_file_of_an_inline_step_is_checked_too(project):
    message = error(project, """\
        type: pipeline
        jobs:
          s:
            type: spark
            code: ./components/src
            entry: {file: nope.py}
            resources: {instance_type: Standard_DS2_v2}
        """)
    assert message.startswith("pipeline.yml:6:19: jobs.s.entry.file: 'nope.py' not found in the code folder ")


def test_a_step_with_a_component_cannot_set_the_program(project):
    message = error(project, PIPELINE + "    args: --other\n")
    assert message.startswith("pipeline.yml:24:11: jobs.spark_job.args: 'args' comes from the component; a step "
                              "with 'component' cannot set it")


def test_a_step_conf_is_checked_with_the_components(project):
    # The component lets 1..4 executors come and go; 8 at the start is outside them.
    message = error(project, PIPELINE + "    conf:\n      spark.executor.instances: 8\n")
    assert message == ("pipeline.yml:25:7: jobs.spark_job.conf: spark.executor.instances (8) must be between "
                       "minExecutors (1) and maxExecutors (4)")


def test_a_spark_step_without_a_program_says_what_it_needs(project):
    message = error(project, """\
        type: pipeline
        jobs:
          s:
            type: spark
            resources: {instance_type: Standard_DS2_v2}
        """)
    assert "jobs.s.entry: a spark step needs 'entry'" in message


def test_a_command_component_in_a_spark_step_is_said_as_such(project):
    message = error(project, """\
        type: pipeline
        jobs:
          s:
            type: spark
            component: {type: command, command: echo hi}
        """)
    assert "jobs.s.component.type: a command component runs in a step of 'type: command'; this step's type is " \
           "spark" in message


def test_an_input_the_component_does_not_declare_is_refused(project):
    message = error(project, PIPELINE.replace("      titanic_data:\n        type: uri_file",
                                              "      titanic:\n        type: uri_file"))
    assert "jobs.spark_job.inputs.titanic: the component 'titanic_spark_component' has no input 'titanic'" in message


# ---- the child job -----------------------------------------------------------------------------


def test_a_step_with_resources_and_no_compute_is_serverless_spark(project, tmp_path: Path):
    spec = project(PIPELINE.replace("type: pipeline\n", "type: pipeline\nsettings: {default_compute: azureml:cpu}\n"))
    child = children(spec.entity, default_compute="local")["spark_job"]
    assert child == {
        "type": "spark", "display_name": "spark_job", "code": str(tmp_path / "components" / "src"),
        "entry": {"file": "titanic.py"},
        "args": "--titanic_data ${{inputs.titanic_data}} --wrangled_data ${{outputs.wrangled_data}}",
        "conf": {"spark.driver.cores": 1, "spark.driver.memory": "2g", "spark.executor.cores": 2,
                 "spark.executor.memory": "2g", "spark.dynamicAllocation.enabled": True,
                 "spark.dynamicAllocation.minExecutors": 1, "spark.dynamicAllocation.maxExecutors": 4},
        "resources": {"instance_type": "standard_e8s_v3", "runtime_version": "3.4"},
        "inputs": {"titanic_data": {"type": "uri_file", "mode": "direct",
                                    "path": "azureml://datastores/workspaceblobstore/paths/data/titanic.csv"}},
        "outputs": {"wrangled_data": {"type": "uri_folder", "mode": "direct",
                                      "path": "azureml://datastores/workspaceblobstore/paths/data/wrangled/"}},
        "identity": {"type": "managed"},
    }  # no compute: neither the pipeline's default nor the server's replaces serverless Spark
    SparkJob.model_validate(child)  # the job service takes it as a Spark job


def test_a_step_with_a_compute_runs_there_and_one_with_neither_takes_the_pipelines(project):
    with_compute = project(PIPELINE.replace("    resources:\n", "    compute: azureml:my-pool\n    resources:\n"))
    assert children(with_compute.entity)["spark_job"]["compute"] == "azureml:my-pool"
    plain = PIPELINE.split("    resources:\n")[0]
    assert "compute" not in children(project(plain).entity)["spark_job"]  # the server's choice, as any step
    defaulted = project(plain.replace("type: pipeline\n", "type: pipeline\ncompute: azureml:cpu\n"))
    assert children(defaulted.entity)["spark_job"]["compute"] == "azureml:cpu"


def test_a_step_conf_is_merged_over_the_components_key_by_key(project):
    spec = project(PIPELINE + "    conf:\n      spark.executor.memory: 4g\n      spark.sql.shuffle.partitions: 16\n")
    conf = children(spec.entity)["spark_job"]["conf"]
    assert conf["spark.executor.memory"] == "4g" and conf["spark.sql.shuffle.partitions"] == 16
    assert conf["spark.driver.memory"] == "2g" and conf["spark.dynamicAllocation.maxExecutors"] == 4


def test_a_spark_step_reads_an_upstream_steps_output_and_is_reused_like_a_command_step(project):
    spec = project("""\
        type: pipeline
        jobs:
          prep:
            type: command
            command: echo hi > ${{outputs.out}}/x
            outputs: {out: {type: uri_file}}
          wrangle:
            type: spark
            component: ./components/spark-job-component.yml
            inputs:
              titanic_data: ${{parent.jobs.prep.outputs.out}}
            resources: {instance_type: Standard_DS2_v2}
        """).entity
    first = decide_pipeline(spec, {}, cancel_requested=False, default_compute=None)
    assert [launch.step for launch in first.launch] == ["prep"]
    after = decide_pipeline(spec, {"prep": StepView("prep", "p_prep", "Completed")}, cancel_requested=False,
                            default_compute=None)
    launch = after.launch[0]
    assert launch.spec["inputs"] == {"titanic_data": {"type": "uri_file", "path": "azureml://jobs/p_prep/outputs/out"}}
    assert launch.reuse_key is not None
    changed = {**launch.spec, "conf": {**launch.spec["conf"], "spark.sql.shuffle.partitions": "8"}}
    assert reuse_key(changed) != launch.reuse_key  # what Spark is told is part of what decides the result


def test_a_non_deterministic_spark_component_is_not_reused(project):
    spec = project(component=COMPONENT.replace("version: 1\n", "version: 1\nis_deterministic: false\n"))
    decision = decide_pipeline(spec.entity, {}, cancel_requested=False, default_compute=None)
    assert decision.launch[0].reuse_key is None


def _component_dict() -> dict:
    return {"name": "titanic_spark_component", "version": "1", "type": "spark", "code": "cible://snapshots/abc",
            "entry": {"file": "titanic.py"}, "inputs": {"titanic_data": {"type": "uri_file"}},
            "outputs": {"wrangled_data": {"type": "uri_folder"}},
            "args": "--in ${{inputs.titanic_data}} --out ${{outputs.wrangled_data}}"}
