"""`cible compute list-sizes` and `show-size` through the CLI."""

from __future__ import annotations

import json


def test_list_sizes_filters_gpu_sizes_of_a_compute_type(workspace):  # noqa: ANN001
    sizes = json.loads(workspace.cible("compute", "list-sizes", "--type", "computeinstance", "--gpu", "-o", "json").stdout)
    assert sizes and all(s["gpus"] > 0 and "ComputeInstance" in s["supportedComputeTypes"] for s in sizes)
    assert not any(s["retired_on"] for s in sizes)  # retired series are left out unless asked for


def test_show_size_gives_the_shape_and_suggests_names_for_a_typo(workspace):  # noqa: ANN001
    size = json.loads(workspace.cible("compute", "show-size", "Standard_DS3_v2", "-o", "json").stdout)
    assert (size["vCPUs"], size["memoryGB"], size["gpus"]) == (4, 14.0, 0)
    typo = workspace.cible("compute", "show-size", "Standard_DS3v2", check=False)
    assert typo.returncode == 1 and "did you mean Standard_DS3_v2" in typo.stderr
