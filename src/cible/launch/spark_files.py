"""Where a Spark job's inputs are staged and its outputs written, and how the outputs reach their paths.

Spark's executors read the job's inputs, on every node of the job: a staged input (an upload, a URL) is
staged once, by the first node, under a folder of the job's own in the datastore (`plan["spark"]["root"]`,
the same path on every node of a shared workspace, bound read-write in each node's sandbox), not in the
first node's run folder, which the other nodes' sandboxes hide. Datastore inputs are read in place.

Spark replaces the folder it writes (pandas API on Spark's `to_csv` and `mode("overwrite")` delete it
first), and a job's output folder is a bind mount in its sandbox, which cannot be deleted. So a Spark
job's outputs (direct or rw_mount) are given to Spark as folders under that root too, and the first
node's launcher moves each one in place of its output's folder once the job has run: Spark's overwrite,
made at the end.

Stdlib only, like the rest of the launcher.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from cible.core.errors import CibleError
from cible.core.safepaths import under


def spark_root(plan: dict[str, Any]) -> Path | None:
    """A Spark job's staging folder (made here), or None for any other job."""
    root = (plan.get("spark") or {}).get("root")
    if not root:
        return None
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def publish_spark_outputs(plan: dict[str, Any]) -> None:
    """On the job's first node: each output Spark wrote replaces its folder's content; the staging root goes."""
    root = spark_root(plan)
    if root is None or plan.get("node_rank", 0) != 0:
        return
    for name, spec in (plan.get("outputs") or {}).items():
        if spec.get("mode") == "upload":
            continue
        destination = Path(spec["local_path"])
        try:  # the job wrote this folder: a link it left along the way (to the workspace, say) is refused
            staged = under(root, "outputs", name, field=f"outputs.{name}")
        except CibleError:
            continue
        if staged.is_symlink() or not staged.is_dir():
            continue
        destination.mkdir(parents=True, exist_ok=True)
        for old in destination.iterdir():  # the output is what this run wrote, as Spark's overwrite leaves it
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        for item in staged.iterdir():
            os.replace(item, destination / item.name)
    shutil.rmtree(root, ignore_errors=True)
