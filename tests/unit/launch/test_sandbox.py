"""The job sandbox: the workspace hidden but for the job's run (read-write) and its data (read-only)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import sys
from pathlib import Path

import pytest

from cible.launch.sandbox import Sandbox

PROBE = r"""
import json, os, sys
home, parent = sys.argv[1], int(sys.argv[2])
def can(f):
    try:
        f()
        return True
    except OSError:
        return False
found = {
    "cwd": os.getcwd(),
    "entries": sorted(os.listdir(home)),
    "token": can(lambda: open(os.path.join(home, "token")).read()),
    "other_run": can(lambda: open(os.path.join(home, "runs", "other", "x")).read()),
    "data": open(os.path.join(home, "datastores", "ds", "f")).read(),
    "write_data": can(lambda: open(os.path.join(home, "datastores", "ds", "g"), "w").write("x")),
    "write_output": can(lambda: open(os.path.join(home, "datastores", "ds", "out", "o"), "w").write("x")),
    "write_run": can(lambda: open("made-here", "w").write("x")),
    "parent_mem": can(lambda: open(f"/proc/{parent}/mem", "rb").read(1)),
    "parent_root": can(lambda: os.listdir(f"/proc/{parent}/root")),
    "parent_environ": can(lambda: open(f"/proc/{parent}/environ", "rb").read(1)),
    "escape_by_dots": can(lambda: open("../../../token").read()),
}
try:
    os.kill(parent, 0)
    found["signal_parent"] = True
except OSError:
    found["signal_parent"] = False
print(json.dumps(found))
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "ws"
    for folder in ("runs/mine/wd", "runs/other", "datastores/ds/out"):
        (home / folder).mkdir(parents=True)
    (home / "token").write_text("secret")
    (home / "cible.db").write_text("db")
    (home / "runs" / "other" / "x").write_text("other run")
    (home / "datastores" / "ds" / "f").write_text("data")
    return home


def test_a_sandboxed_command_sees_its_run_and_data_only(home: Path):
    box = Sandbox(home, writable=(home / "runs" / "mine", home / "datastores" / "ds" / "out"),
                  readable=(home / "datastores",))
    wd = home / "runs" / "mine" / "wd"
    assert box.probe(wd) is None, "this machine cannot make the sandbox"
    done = subprocess.run([sys.executable, "-c", PROBE, str(home), str(os.getpid())], cwd=wd,
                          preexec_fn=box.preexec(wd), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["cwd"] == str(wd)
    assert found["entries"] == ["datastores", "runs"]  # no token, database, logs, nodes
    assert found["token"] is False and found["other_run"] is False and found["escape_by_dots"] is False
    assert found["data"] == "data" and found["write_data"] is False  # data: read-only
    assert found["write_output"] is True and found["write_run"] is True
    assert (wd / "made-here").is_file() and (home / "datastores" / "ds" / "out" / "o").is_file()
    assert found["parent_mem"] is False and found["parent_root"] is False and found["signal_parent"] is False
    assert found["parent_environ"] is False
    assert (home / "token").read_text() == "secret"  # nothing changed outside


def test_the_sandbox_is_built_from_the_plan(home: Path, tmp_path: Path):
    plan = {"sandbox": {"hide": str(home), "readable": [str(home / "datastores"), "/elsewhere"]},
            "env_cache": "/not/in/the/workspace"}
    box = Sandbox.from_plan(plan, [home / "runs" / "mine", Path("/tmp")], [home / "runs" / "mine" / "inputs"],
                            protect=[tmp_path / "absent", Path(sys.prefix)])
    assert box == Sandbox(home, (home / "runs" / "mine",), (home / "runs" / "mine" / "inputs", home / "datastores"),
                          (Path(sys.prefix),))
    assert Sandbox.from_plan({}, [home]) is None  # a plan of before the sandbox
    assert Sandbox.from_plan({"sandbox": {"hide": str(home / "absent")}}, []) is None  # another machine's


def test_a_path_reached_through_a_link_is_not_bound_back(home: Path):
    """A link planted where a later job's output goes must not bind the workspace into that job."""
    (home / "datastores" / "ds" / "planted").symlink_to(home)
    (home / "datastores" / "ds" / "inner").symlink_to(home / "runs" / "mine")
    plan = {"sandbox": {"hide": str(home)}}
    box = Sandbox.from_plan(plan, [home / "datastores" / "ds" / "planted", home / "datastores" / "ds" / "inner",
                                   home, home / "runs" / "..", home / "runs" / "mine"])
    assert box.writable == (home / "runs" / "mine",)


def test_the_installation_is_read_only_to_the_command(home: Path, tmp_path: Path):
    installed = tmp_path / "site"
    installed.mkdir()
    box = Sandbox(home, writable=(home / "runs" / "mine",), protect=(installed,))
    wd = home / "runs" / "mine" / "wd"
    done = subprocess.run(["sh", "-c", f"echo x > {installed}/module.py"], cwd=wd, preexec_fn=box.preexec(wd),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Read-only" in done.stderr
    assert not (installed / "module.py").exists()


def test_the_ranks_of_a_node_share_one_sandbox(home: Path):
    """One user namespace and one Landlock domain for all ranks: they may reach each other (MPI's
    cross-memory attach needs it), the launcher's side may not be reached."""
    from cible.launch.ranks import Ranks

    box = Sandbox(home, writable=(home / "runs" / "mine",))
    wd = home / "runs" / "mine" / "wd"
    logs = home / "runs" / "mine" / "logs"
    logs.mkdir()
    command = ("readlink /proc/self/ns/user > ns.$RANK; echo $$ > pid.$RANK; "
               "while [ ! -f pid.0 ] || [ ! -f pid.1 ]; do sleep 0.01; done; "
               "other=$(cat pid.$((1 - RANK))); head -c 1 /proc/$other/environ > /dev/null && echo ok > reach.$RANK; "
               f"ls {home}/token 2> /dev/null > leak.$RANK; touch done.$RANK; "
               "while [ ! -f done.0 ] || [ ! -f done.1 ]; do sleep 0.01; done")  # both alive until both looked
    ranks = Ranks("bash", command, wd, {"PATH": os.environ["PATH"]}, [(0, {"RANK": "0"}), (1, {"RANK": "1"})],
                  logs, enter=box.preexec(wd))
    stopped, failed = ranks.wait(time.monotonic() + 30, lambda: False)
    ranks.end_groups()
    assert (stopped, failed) == (None, None)
    assert (wd / "ns.0").read_text() == (wd / "ns.1").read_text() != os.readlink("/proc/self/ns/user") + "\n"
    assert (wd / "reach.0").is_file() and (wd / "reach.1").is_file()
    assert (wd / "leak.0").read_text() == "" and (wd / "leak.1").read_text() == ""
    assert all(r.proc.returncode == 0 for r in ranks.ranks)


@pytest.mark.parametrize("mode", ["auto", "required"])
def test_where_the_sandbox_cannot_be_made_a_job_says_so_or_fails(home: Path, monkeypatch, mode):
    from cible.launch import sandbox
    from cible.launch.launcher import Launcher

    run = home / "runs" / "mine"
    (run / "artifacts" / "user_logs").mkdir(parents=True)
    (run / "artifacts" / "system_logs").mkdir(parents=True)
    (run / "plan.json").write_text(json.dumps({"job_name": "mine", "sandbox": {"hide": str(home)}}))

    def cannot(self, cwd):  # noqa: ANN001, ARG001
        raise sandbox.SandboxError(1, "unshare(CLONE_NEWUSER|CLONE_NEWNS): Operation not permitted")

    monkeypatch.setattr(sandbox.Sandbox, "enter", cannot)
    monkeypatch.setenv("CIBLE_JOB_SANDBOX", mode)
    launcher = Launcher(run)

    def start(preexec):  # noqa: ANN001
        return subprocess.run(["true"], preexec_fn=preexec, check=True)

    if mode == "required":
        with pytest.raises(sandbox.SandboxError, match="Operation not permitted"):
            launcher.sandboxed(start)
        return
    assert launcher.sandboxed(start).returncode == 0  # started without it
    log = (run / "artifacts" / "user_logs" / "std_log.txt").read_text()
    assert "cannot hide the workspace from the job" in log and "Operation not permitted" in log
