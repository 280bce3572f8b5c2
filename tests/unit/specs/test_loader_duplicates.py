"""A mapping that repeats a key is refused with both lines, where PyYAML would keep the last value."""

from __future__ import annotations

from pathlib import Path

import pytest

from cible.core.errors import InvalidSpecError
from cible.core.specs.azureml.loader import load_spec
from cible.core.specs.azureml.yaml_source import parse_yaml

REPO = Path(__file__).resolve().parents[3]


def test_top_level_duplicate_names_both_lines(load_error):
    error = load_error("command: echo hi\ncompute: local\ncode: .\ncompute: serverless\n")
    assert error.message == "job.yml:4:1: duplicate key 'compute' (first at line 2); keep one"
    assert error.code == "InvalidSpec"
    assert error.details == [{"file": "job.yml", "line": 4, "column": 1, "field": "compute",
                              "message": "duplicate key 'compute' (first at line 2); keep one"}]


def test_nested_duplicate_names_its_parent(load_error):
    error = load_error(
        """
        command: echo
        inputs:
          data:
            path: https://x/y
            mode: download
            path: https://x/z
        """
    )
    assert error.message == "job.yml:6:5: duplicate key 'path' in inputs.data (first at line 4); keep one"


def test_duplicate_inside_a_list_item(load_error):
    error = load_error("type: amlcompute\nname: c\nidentity:\n  user_assigned_identities:\n"
                       "    - resource_id: a\n      resource_id: b\n", kind="compute")
    assert error.message.startswith("job.yml:6:7: duplicate key 'resource_id' in identity.user_assigned_identities[0]")


def test_every_duplicate_is_listed_in_file_order(load_error):
    error = load_error("command: a\nenvironment_variables:\n  X: 1\n  X: 2\ncommand: b\n")
    assert error.message.splitlines() == [
        "job.yml:4:3: duplicate key 'X' in environment_variables (first at line 3); keep one",
        "job.yml:5:1: duplicate key 'command' (first at line 1); keep one",
    ]


def test_a_key_that_overrides_a_merged_one_is_not_a_duplicate(load):
    loaded = load(
        """
        command: echo
        environment_variables:
          <<: &base {A: "1", B: "2"}
          B: "3"
        """
    )
    assert loaded.entity.environment_variables == {"A": "1", "B": "3"}


def test_an_aliased_mapping_is_not_a_duplicate_of_itself():
    parsed = parse_yaml("a: &m {x: 1}\nb: *m\nc: *m\n", "t.yml")
    assert parsed.data == {"a": {"x": 1}, "b": {"x": 1}, "c": {"x": 1}}


def test_keys_that_yaml_reads_as_the_same_value_are_duplicates():
    with pytest.raises(InvalidSpecError, match=r"t.yml:2:1: duplicate key 1 \(first at line 1\)"):
        parse_yaml("1: a\n01: b\n", "t.yml")


def test_quickstart_job_loads_and_runs_on_local():
    loaded = load_spec(REPO / "src" / "cible" / "quickstart" / "job.yml", "job")
    assert loaded.entity.compute == "local"


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO).as_posix() for root in ("examples", "src")
                                        for p in (REPO / root).rglob("*.y*ml")))
def test_shipped_yaml_has_no_duplicate_keys(path):
    parse_yaml((REPO / path).read_text(encoding="utf-8"), path)  # raises on a repeated key
