"""The sbatch script of a job's attempt: its `#SBATCH` options from the job's size and Slurm
settings, Slurm's time limit as a backstop behind the launcher's, and no secret ever in it."""

from __future__ import annotations

import pytest

from cible.backends.slurm.script import GRACE_S, ScriptError, render, time_minutes


def options(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_a_two_node_job_with_every_setting():
    script = render("khaki_boot_9xq8", 2, ["srun python3 -m cible.agent.pilot --job khaki_boot_9xq8 --attempt 2"],
                    nodes=2, cpus_per_task=4, memory_mb=8192, gpus=1, time_limit_s=600, partition="gpu",
                    qos="high", account="ml", constraint="a100&ib", output_dir="/home/u/.cible-agent/runs/k.2")
    assert script.startswith("#!/bin/bash\n")
    assert options(script) == [
        "--job-name=cible-khaki_boot_9xq8", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=4", "--mem=8192",
        "--gres=gpu:1", "--time=12", "--partition=gpu", "--qos=high", "--account=ml", "--constraint=a100&ib",
        "--output=/home/u/.cible-agent/runs/k.2/slurm-%j.out", "--chdir=/home/u/.cible-agent/runs/k.2",
        "--export=ALL", "--no-requeue"]
    body = script.splitlines()
    # srun passes the job's environment to its tasks, whatever the site's default
    assert body.index("export SLURM_EXPORT_ENV=ALL") < body.index(
        "srun python3 -m cible.agent.pilot --job khaki_boot_9xq8 --attempt 2")
    assert script.endswith("--attempt 2\n")


def test_what_is_not_given_is_left_to_slurm():
    found = options(render("j", 1, ["true"], output_dir="/tmp/out"))
    assert found == ["--job-name=cible-j", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1",
                     "--output=/tmp/out/slurm-%j.out", "--chdir=/tmp/out", "--export=ALL", "--no-requeue"]
    assert not [o for o in found if o.startswith(("--time", "--gres", "--mem", "--partition", "--qos", "--account"))]


@pytest.mark.parametrize("limit_s, minutes", [(None, None), (0, None), (1, 3), (60, 3), (61, 4), (3600, 62), (3601, 63),
                                              (58.5, 3), (180, 5)])
def test_slurm_time_is_the_limit_plus_the_grace_rounded_up_to_minutes(limit_s, minutes):
    assert GRACE_S == 120
    assert time_minutes(limit_s) == minutes
    found = [o for o in options(render("j", 0, [], time_limit_s=limit_s, output_dir="/o")) if o.startswith("--time")]
    assert found == ([] if minutes is None else [f"--time={minutes}"])


@pytest.mark.parametrize("gpus, expected", [(0, []), (2, ["--gres=gpu:2"])])
def test_gpus_per_node(gpus, expected):
    assert [o for o in options(render("j", 0, [], gpus=gpus, output_dir="/o")) if o.startswith("--gres")] == expected


@pytest.mark.parametrize("token", [
    "cible-job.a2hha2k.s4lt.c2lnbmF0dXJl",  # a run token
    "cible-node.bm9kZS0x.c2lnbmF0dXJl",  # a node token
    "cible-pilot.a2hha2k.s4lt.c2lnbmF0dXJl",  # a pilot's
])
def test_a_token_never_goes_into_the_script(token):
    with pytest.raises(ScriptError, match="cible token") as refused:
        render("j", 0, [f"CIBLE_TOKEN={token} srun python3 -m cible.agent.pilot"], output_dir="/o")
    assert token not in str(refused.value)


def test_a_named_secret_never_goes_into_the_script():
    with pytest.raises(ScriptError, match="secret") as refused:
        render("j", 0, ["echo hunter2-s3cret"], output_dir="/o", secrets=["hunter2-s3cret"])
    assert "hunter2" not in str(refused.value)
    assert render("j", 0, ["echo fine"], output_dir="/o", secrets=["", "hunter2-s3cret"])


def test_job_names_with_dots_or_blanks_are_refused():
    # No dots: `cible-<job>` must never read as a token, and Slurm job names stay one word.
    for name in ("a.b", "a b", "", "-lead", "a\nb"):
        with pytest.raises(ScriptError, match="job name"):
            render(name, 0, [], output_dir="/o")


@pytest.mark.parametrize("field, value", [
    ("partition", "debug\n#SBATCH --uid=0"), ("partition", "a b"), ("qos", "q'x"), ("account", "a;rm -rf ~"),
    ("constraint", "x y"), ("partition", "a#b"),
])
def test_a_setting_that_would_break_out_of_its_line_is_refused(field, value):
    with pytest.raises(ScriptError, match=f"Slurm {field}"):
        render("j", 0, [], output_dir="/o", **{field: value})


def test_several_partitions_are_one_setting():
    assert "--partition=gpu,cpu" in options(render("j", 0, [], partition="gpu,cpu", output_dir="/o"))


@pytest.mark.parametrize("folder", ["relative/out", "/a b", "/o/%j", "/o/../etc", "/o\n", "/o'x"])
def test_output_folder_must_be_plain_and_absolute(folder):
    with pytest.raises(ScriptError, match="output folder"):
        render("j", 0, [], output_dir=folder)


def test_trailing_slash_of_the_output_folder_is_dropped():
    assert "--output=/o/slurm-%j.out" in options(render("j", 0, [], output_dir="/o/"))


@pytest.mark.parametrize("field, value", [("nodes", 0), ("cpus_per_task", 0), ("gpus", -1), ("memory_mb", 0),
                                          ("nodes", 1.5), ("nodes", True)])
def test_sizes_must_be_whole_and_positive(field, value):
    with pytest.raises(ScriptError, match=field):
        render("j", 0, [], output_dir="/o", **{field: value})


def test_a_command_line_is_one_line():
    with pytest.raises(ScriptError, match="line break"):
        render("j", 0, ["echo a\necho b"], output_dir="/o")
