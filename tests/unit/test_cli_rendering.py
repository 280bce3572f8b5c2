"""The CLI's output rules: az's tsv, JMESPath queries, and tables that fit the terminal."""

from __future__ import annotations

import json

import pytest

from cible.cli import output
from cible.cli.output import OutputFormat, emit, fit_columns, tsv_lines

JOBS = [
    {"name": "brave-owl-1", "status": "Completed", "display_name": "a rather long display name for a job",
     "compute": "cpu-cluster", "tags": {"a": "b"}},
    {"name": "calm-fox-2", "status": "Failed", "display_name": None, "compute": "local", "tags": {}},
]
COLUMNS = [("name", "name"), ("status", "status"), ("display name", "display_name"), ("compute", "compute")]


@pytest.fixture(autouse=True)
def rendering():  # noqa: ANN201
    saved = (output.current.format, output.current.query)
    yield output.current
    output.current.format, output.current.query = saved


def test_tsv_leaves_nested_values_out_and_prints_nothing_for_none() -> None:
    assert tsv_lines(JOBS) == ["brave-owl-1\tCompleted\ta rather long display name for a job\tcpu-cluster",
                               "calm-fox-2\tFailed\t\tlocal"]
    assert tsv_lines("Completed") == ["Completed"]
    assert tsv_lines([["a", 1], ["b", True]]) == ["a\t1", "b\tTrue"]


def test_a_query_shapes_the_result_before_the_format(rendering, capsys) -> None:  # noqa: ANN001
    import jmespath

    rendering.format, rendering.query = OutputFormat.json, jmespath.compile("[?status=='Failed'].name")
    emit(JOBS, table=lambda _: pytest.fail("a query's result is not the command's shape"))
    assert json.loads(capsys.readouterr().out) == ["calm-fox-2"]


def test_none_prints_nothing(rendering, capsys) -> None:  # noqa: ANN001
    rendering.format, rendering.query = OutputFormat.none, None
    emit(JOBS, table=lambda _: pytest.fail("nothing is drawn for -o none"))
    assert capsys.readouterr().out == ""


def test_a_wide_terminal_keeps_every_column() -> None:
    kept, dropped = fit_columns(JOBS, COLUMNS, 200)
    assert kept == COLUMNS and dropped == []


def test_a_narrow_terminal_drops_right_columns_but_never_names_or_statuses() -> None:
    kept, dropped = fit_columns(JOBS, COLUMNS, 40)
    assert ("name", "name") in kept and ("status", "status") in kept
    assert dropped and dropped[-1] == ("compute", "compute")
    assert fit_columns(JOBS, COLUMNS, 10)[0] == [("name", "name"), ("status", "status")]


def test_the_table_shows_statuses_whole_in_a_narrow_terminal(rendering, capsys, monkeypatch) -> None:  # noqa: ANN001
    from rich.console import Console

    monkeypatch.setattr(output, "console", Console(width=40, no_color=True))
    rendering.format, rendering.query = OutputFormat.table, None
    output.print_table(JOBS, COLUMNS)
    shown = capsys.readouterr().out
    assert "Completed" in shown and "brave-owl-1" in shown and "…" not in shown


def test_compute_list_shows_a_clusters_nodes_and_allocation_and_an_instances_own_state() -> None:
    from cible.cli.computes import listed_row

    cluster = {"name": "cpu", "type": "amlcompute", "size": "Standard_DS3_v2", "current_node_count": 1,
               "max_instances": 4, "allocation_state": "Resizing"}
    assert (listed_row(cluster)["nodes"], listed_row(cluster)["state"]) == ("1 of 4", "Resizing")
    instance = {"name": "ci", "type": "computeinstance", "state": "Stopped", "current_node_count": 0,
                "allocation_state": "Steady"}
    assert (listed_row(instance)["nodes"], listed_row(instance)["state"]) == ("0", "Stopped")
    local = {"name": "local", "type": "local", "state": "Running"}
    assert listed_row(local) == local
