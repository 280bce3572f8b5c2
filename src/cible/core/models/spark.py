"""A `type: spark` job (Azure reference §3.9) as Azure's CLI v2 YAML writes it.

`entry` is a Python file (`entry.file`) or a JVM class (`entry.class_name`, whose JAR is the first of
`jars`); `py_files`, `jars`, `files` and `archives` are paths in `code`; `conf` holds Spark properties,
those Azure names (driver and executor cores, memory, instances, dynamic allocation) checked here, any
other `spark.*` key passed through to Spark. `resources` (instance_type, runtime_version) makes it a
serverless Spark job; `compute` names a Spark compute (synapsespark) or any compute cible runs jobs on.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from cible.core.naming import ExperimentName, JobName

from .common import OptStr, SpecModel
from .jobs import (
    MAX_DESCRIPTION_CHARS,
    MAX_DISPLAY_NAME_CHARS,
    EnvironmentValue,
    EnvironmentVariables,
    InputValue,
    JobOutput,
    Tags,
    check_spec_size,
)

_MEMORY = re.compile(r"^\d+[kmgt]b?$", re.IGNORECASE)
_CLASS_NAME = re.compile(r"^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$")
# The keys Azure names in a Spark job's `conf`, checked as it checks them; any other `spark.*` key goes to Spark.
CORES_KEYS = ("spark.driver.cores", "spark.executor.cores")
MEMORY_KEYS = ("spark.driver.memory", "spark.executor.memory")
COUNT_KEYS = ("spark.executor.instances", "spark.dynamicAllocation.minExecutors",
              "spark.dynamicAllocation.maxExecutors")
DYNAMIC = "spark.dynamicAllocation.enabled"
# What a job leaves out gets these (Azure's SDK requires the first four; cible fills them).
CONF_DEFAULTS = {"spark.driver.cores": 1, "spark.driver.memory": "1g", "spark.executor.cores": 1,
                 "spark.executor.memory": "1g", "spark.executor.instances": 1}


def memory_mb(value: str) -> int:
    """A JVM size (`2g`, `512m`, `1024k`, `2gb`) in MiB, rounded up."""
    match = re.fullmatch(r"(\d+)([kmgt])b?", value.strip().lower())
    if not match:
        raise ValueError(f"{value!r} is not a size like '2g' or '512m'")
    number, unit = int(match.group(1)), match.group(2)
    return {"k": -(-number // 1024), "m": number, "g": number * 1024, "t": number * 1024 * 1024}[unit]


def _spark_paths(value: list[str]) -> list[str]:
    for item in value:
        if not item or "," in item:  # spark-submit takes each list comma-separated
            raise ValueError(f"{item!r}: each entry is one path in code (no commas)")
    return value


def _spark_conf(value: dict[str, Any]) -> dict[str, Any]:
    """Azure's conf keys checked (cores and counts whole numbers, memory a JVM size, dynamic allocation a
    boolean), any other key a `spark.*` property with a scalar value."""
    checked: dict[str, Any] = {}
    for key, item in value.items():
        key = str(key)
        if isinstance(item, (list, dict)) or item is None:
            raise ValueError(f"{key}: a Spark property is a scalar (text, number or boolean)")
        if key in CORES_KEYS or key in COUNT_KEYS:
            number = int(item) if isinstance(item, (int, str)) and str(item).isdigit() else None
            low = 0 if key in COUNT_KEYS else 1
            if number is None or number < low:
                raise ValueError(f"{key}: {item!r} is not a whole number of at least {low}")
            item = number
        elif key in MEMORY_KEYS:
            if not _MEMORY.fullmatch(str(item)):
                raise ValueError(f"{key}: {item!r} is not a size like '2g' or '512m'")
            item = str(item)
        elif key == DYNAMIC:
            text = str(item).lower()
            if text not in ("true", "false"):
                raise ValueError(f"{key}: {item!r} is not true or false")
            item = text == "true"
        elif not key.startswith("spark."):
            raise ValueError(f"{key}: Spark properties start with 'spark.'")
        elif isinstance(item, bool):
            item = str(item).lower()
        checked[key] = item
    return checked


# A Spark program's `conf` and file lists (py_files, jars, files, archives), checked the same wherever they
# are written: a Spark job, a spark component, a spark step. An empty YAML value (`conf:`) is none given.
def _flat_conf(value: Any) -> Any:
    """`conf`, its nested mappings flattened to dotted keys: `--set conf.spark.executor.cores=4` writes
    {"spark": {"executor": {"cores": 4}}}, which is spark.executor.cores."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return value
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict) and item:
            flat.update({f"{key}.{inner}": v for inner, v in _flat_conf(item).items()})
        else:
            flat[str(key)] = item
    return flat


SparkConf = Annotated[dict[str, Any], BeforeValidator(_flat_conf), AfterValidator(_spark_conf)]
SparkPaths = Annotated[list[str], BeforeValidator(lambda v: [] if v is None else v), AfterValidator(_spark_paths)]


class SparkEntry(SpecModel):
    file: str | None = Field(None, min_length=1)
    class_name: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> SparkEntry:
        if (self.file is None) == (self.class_name is None):
            raise ValueError("give one of entry.file (a Python file in code) or entry.class_name (a JVM class "
                             "in the first of jars)")
        if self.class_name is not None and not _CLASS_NAME.fullmatch(self.class_name):
            raise ValueError(f"entry.class_name {self.class_name!r} is not a JVM class name like com.example.Main")
        return self


class SparkResources(SpecModel):
    instance_type: str | None = None
    runtime_version: OptStr = None  # Azure's Spark runtime ("3.4"): the Spark line the job runs on


class SparkJob(SpecModel):
    """A `type: spark` job."""

    type: Literal["spark"] = "spark"
    name: JobName | None = None
    display_name: str | None = Field(None, max_length=MAX_DISPLAY_NAME_CHARS)
    experiment_name: ExperimentName | None = None
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    tags: Tags = Field(default_factory=dict)
    code: str | None = None
    entry: SparkEntry
    py_files: SparkPaths = Field(default_factory=list)
    jars: SparkPaths = Field(default_factory=list)
    files: SparkPaths = Field(default_factory=list)
    archives: SparkPaths = Field(default_factory=list)
    conf: SparkConf = Field(default_factory=dict)
    args: str | None = None
    environment: EnvironmentValue | None = None
    environment_variables: EnvironmentVariables = Field(default_factory=dict)
    compute: str | None = None
    resources: SparkResources | None = None
    inputs: dict[str, InputValue] = Field(default_factory=dict)
    outputs: dict[str, JobOutput | None] = Field(default_factory=dict)
    identity: dict[str, Any] | None = None
    services: dict[str, dict[str, Any]] | None = None
    # Read-only, server-populated: present in `az ml job show` output, ignored on create.
    status: str | None = None
    id: str | None = None
    creation_context: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None

    @field_validator("inputs", "outputs", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return {} if value is None else value  # `inputs:` with nothing under it parses as None

    @model_validator(mode="after")
    def _checks(self) -> SparkJob:
        conf = self.conf
        if conf.get(DYNAMIC):
            low, high = (conf.get("spark.dynamicAllocation.minExecutors"),
                         conf.get("spark.dynamicAllocation.maxExecutors"))
            if low is None or high is None:
                raise ValueError("conf: with spark.dynamicAllocation.enabled, give spark.dynamicAllocation.minExecutors "
                                 "and spark.dynamicAllocation.maxExecutors")
            if low > high:
                raise ValueError(f"conf: spark.dynamicAllocation.minExecutors ({low}) is above maxExecutors ({high})")
            instances = conf.get("spark.executor.instances")
            if instances is not None and not low <= instances <= high:
                raise ValueError(f"conf: spark.executor.instances ({instances}) must be between minExecutors ({low}) "
                                 f"and maxExecutors ({high})")
        if self.entry.class_name is not None and not self.jars:
            raise ValueError("entry.class_name: list the JAR that holds it in jars (the first of jars is the "
                             "application's)")
        check_spec_size(self)
        return self

    def conf_value(self, key: str) -> Any:
        """The job's `conf` value for `key`, else cible's default for it (CONF_DEFAULTS)."""
        return self.conf.get(key, CONF_DEFAULTS.get(key))
