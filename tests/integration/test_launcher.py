"""The launcher alone: a hand-built plan.json, a real `python -m cible.launch RUN_DIR` process.

Each test builds the plan PlanBuilder would write, runs the launcher as a
subprocess and checks what it leaves behind: state.json, the user log, staged
inputs as the command saw them, published outputs and artifacts.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    LauncherRun,
    gated_http_file,
    http_server,
    process_alive,
    put_snapshot,
    wait_until,
)

# In the code snapshot of most tests: prints what the command sees, as one JSON line.
PROBE = textwrap.dedent(
    """
    import json, os, stat, sys

    def describe(p):
        if os.path.isdir(p):
            out = {}
            for base, _, names in os.walk(p):
                for n in names:
                    f = os.path.join(base, n)
                    out[os.path.relpath(f, p)] = describe(f)
            return {"dir": out}
        with open(p, encoding="utf-8") as fh:
            return {"text": fh.read(), "write_bits": stat.S_IMODE(os.stat(p).st_mode) & 0o222}

    info = {
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "cwd_files": sorted(os.listdir(".")),
        "exe": sys.executable,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("AZURE", "MY_", "FAKE_"))},
        "paths": {a: describe(a) for a in sys.argv[1:] if os.path.exists(a)},
    }
    print("PROBE " + json.dumps(info))
    """
)


class Run(LauncherRun):
    """The launcher's own tests read the probe the code snapshot prints."""

    def probe(self) -> dict[str, Any]:
        lines = [ln for ln in self.log.splitlines() if ln.startswith("PROBE ")]
        assert lines, f"the probe did not run; std_log.txt:\n{self.log}\nlauncher.txt:\n{self.system_log()}"
        return json.loads(lines[-1][len("PROBE "):])


def completed(run: Run) -> dict[str, Any]:
    state = run.run()
    assert [h["status"] for h in state["history"]] == ["Preparing", "Running", "Finalizing", "Completed"], (
        f"state: {state}\nstd_log.txt:\n{run.log}\nlauncher.txt:\n{run.system_log()}"
    )
    assert state.get("error") is None
    return state


@pytest.fixture
def make_run(tmp_path: Path):
    counter = iter(range(1000))

    def make(command: str, **plan: Any) -> Run:
        return Run(tmp_path / f"r{next(counter)}", command, **plan)

    return make


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory):
    """A local http server with a file and a folder (with a sub-folder and a name that needs quoting)."""
    root = tmp_path_factory.mktemp("web")
    (root / "table.csv").write_text("a,b\n1,2\n")
    (root / "folder" / "sub").mkdir(parents=True)
    (root / "folder" / "a.txt").write_text("alpha")
    (root / "folder" / "my file.txt").write_text("spaced")
    (root / "folder" / "sub" / "b.txt").write_text("beta")
    with http_server(root) as url:
        yield url


# -- environment, working directory, interpreter ---------------------------------
def test_command_sees_azure_env_vars_code_cwd_and_the_plans_python(make_run, tmp_path: Path):
    ds = tmp_path / "datastore"
    run = make_run(
        'echo "WHICH=$(command -v python)"; python probe.py --x ${{inputs.x}} ${{inputs.data}} ${{outputs.o}}',
        environment_variables={"MY_VAR": "hello world", "MY_OTHER": "2"},
    )
    run.code({"probe.py": PROBE, "pkg/helper.py": "X = 1\n", "run.sh": "#!/bin/sh\necho hi\n"}, executable=("run.sh",))
    data_snapshot = put_snapshot(run.blob_root, {"data.csv": "x,y\n"})
    run.plan["inputs"] = {
        "x": {"kind": "literal", "value": "3"},
        "data": {"kind": "data", "type": "uri_file", "mode": "ro_mount",
                 "uri": f"cible://snapshots/{data_snapshot}/data.csv",
                 "source": {"snapshot": data_snapshot, "subpath": "data.csv"}},
    }
    out_dir = ds / "azureml" / "test_job_123" / "o"
    run.plan["outputs"] = {"o": {"type": "uri_folder", "mode": "rw_mount",
                                 "uri": "azureml://datastores/workspaceblobstore/paths/azureml/test_job_123/o/",
                                 "local_path": str(out_dir)}}
    completed(run)
    probe = run.probe()
    env = probe["env"]
    assert env["AZUREML_RUN_ID"] == "test_job_123"
    assert env["AZUREML_ARM_PROJECT_NAME"] == "exp-launcher"
    assert env["MY_VAR"] == "hello world" and env["MY_OTHER"] == "2"
    staged = probe["argv"][2]
    assert env["AZURE_ML_INPUT_data"] == staged
    assert probe["paths"][staged]["text"] == "x,y\n"
    assert env["AZURE_ML_OUTPUT_o"] == str(out_dir) == probe["argv"][3]
    assert probe["argv"][:2] == ["--x", "3"]
    # The working directory is the code snapshot, executable bits kept.
    assert Path(probe["cwd"]) == run.dir / "wd"
    assert {"probe.py", "pkg", "run.sh", "outputs", "logs"} <= set(probe["cwd_files"])
    # A host environment: `python` is the launcher's own interpreter.
    assert f"WHICH={Path(sys.executable).parent / 'python'}" in run.log


def test_code_snapshot_keeps_executable_bits(make_run):
    run = make_run("./run.sh && test ! -x plain.txt && echo NOT_EXEC")
    run.code({"run.sh": "#!/bin/sh\necho RAN_SCRIPT\n", "plain.txt": "x"}, executable=("run.sh",))
    completed(run)
    assert "RAN_SCRIPT" in run.log and "NOT_EXEC" in run.log


# -- command expressions -------------------------------------------------------
def test_literal_inputs_substituted_and_optional_blocks_vanish(make_run):
    run = make_run(
        "echo \"ARGS[--x ${{inputs.x}} --flag ${{ inputs.flag }} $[[--opt ${{inputs.opt}}]] "
        "$[[--given ${{inputs.x}}]] $[[inputs.opt]]|$[[inputs.name]]]\""
    )
    run.plan["inputs"] = {
        "x": {"kind": "literal", "value": "3"},
        "flag": {"kind": "literal", "value": "True"},
        "name": {"kind": "literal", "value": "abc"},
    }
    completed(run)
    assert "ARGS[--x 3 --flag True  --given 3 |abc]" in run.log


# -- inputs ----------------------------------------------------------------------
def test_snapshot_inputs_ro_mount_is_read_only_download_is_writable(make_run):
    run = make_run("python probe.py ${{inputs.f_ro}} ${{inputs.f_dl}} ${{inputs.d_ro}} ${{inputs.d_dl}}")
    run.code({"probe.py": PROBE})
    file_snap = put_snapshot(run.blob_root, {"table.csv": "1,2\n"})
    folder_snap = put_snapshot(run.blob_root, {"a.txt": "A", "nested/b.txt": "B"})

    def data(type_: str, mode: str, snap: str, sub: str = "") -> dict[str, Any]:
        uri = f"cible://snapshots/{snap}" + (f"/{sub}" if sub else "")
        return {"kind": "data", "type": type_, "mode": mode, "uri": uri, "source": {"snapshot": snap, "subpath": sub}}

    run.plan["inputs"] = {
        "f_ro": data("uri_file", "ro_mount", file_snap, "table.csv"),
        "f_dl": data("uri_file", "download", file_snap, "table.csv"),
        "d_ro": data("uri_folder", "ro_mount", folder_snap),
        "d_dl": data("uri_folder", "download", folder_snap),
    }
    completed(run)
    probe = run.probe()
    f_ro, f_dl, d_ro, d_dl = probe["argv"]
    paths = probe["paths"]
    assert Path(f_ro).name == "table.csv" and Path(f_dl).name == "table.csv"
    assert paths[f_ro] == {"text": "1,2\n", "write_bits": 0}
    assert paths[f_dl]["text"] == "1,2\n" and paths[f_dl]["write_bits"] != 0
    assert paths[d_ro]["dir"] == {"a.txt": {"text": "A", "write_bits": 0}, "nested/b.txt": {"text": "B", "write_bits": 0}}
    assert {k: v["text"] for k, v in paths[d_dl]["dir"].items()} == {"a.txt": "A", "nested/b.txt": "B"}
    assert all(v["write_bits"] != 0 for v in paths[d_dl]["dir"].values())
    assert probe["env"]["AZURE_ML_INPUT_d_ro"] == d_ro
    # Each input is staged in a place of its own (not the code snapshot).
    assert len({f_ro, f_dl, d_ro, d_dl}) == 4


def test_http_uri_file_and_uri_folder_from_an_index_page(make_run, web: str):
    run = make_run("python probe.py ${{inputs.f}} ${{inputs.d}}")
    run.code({"probe.py": PROBE})
    run.plan["inputs"] = {
        "f": {"kind": "data", "type": "uri_file", "mode": "download", "uri": f"{web}/table.csv",
              "source": {"url": f"{web}/table.csv"}},
        "d": {"kind": "data", "type": "uri_folder", "mode": "ro_mount", "uri": f"{web}/folder",
              "source": {"url": f"{web}/folder"}},
    }
    completed(run)
    probe = run.probe()
    f, d = probe["argv"]
    assert Path(f).name == "table.csv"
    assert probe["paths"][f]["text"] == "a,b\n1,2\n"
    assert {k: v["text"] for k, v in probe["paths"][d]["dir"].items()} == {
        "a.txt": "alpha", "my file.txt": "spaced", os.path.join("sub", "b.txt"): "beta",
    }
    assert all(v["write_bits"] == 0 for v in probe["paths"][d]["dir"].values())


def test_datastore_local_path_inputs_and_direct_mode(make_run, tmp_path: Path):
    store = tmp_path / "ds" / "workspaceblobstore"
    (store / "data" / "set").mkdir(parents=True)
    (store / "data" / "set" / "rows.txt").write_text("r1\n")
    (store / "data" / "one.txt").write_text("single")
    run = make_run("python probe.py ${{inputs.m}} ${{inputs.dl}} ${{inputs.f}} && echo DIRECT=${{inputs.u}}")
    run.code({"probe.py": PROBE})
    uri_base = "azureml://datastores/workspaceblobstore/paths/data"
    run.plan["inputs"] = {
        "m": {"kind": "data", "type": "uri_folder", "mode": "ro_mount", "uri": f"{uri_base}/set",
              "source": {"local_path": str(store / "data" / "set")}},
        "dl": {"kind": "data", "type": "uri_folder", "mode": "download", "uri": f"{uri_base}/set",
               "source": {"local_path": str(store / "data" / "set")}},
        "f": {"kind": "data", "type": "uri_file", "mode": "download", "uri": f"{uri_base}/one.txt",
              "source": {"local_path": str(store / "data" / "one.txt")}},
        "u": {"kind": "data", "type": "uri_folder", "mode": "direct", "uri": f"{uri_base}/set",
              "source": {"local_path": str(store / "data" / "set")}},
    }
    completed(run)
    probe = run.probe()
    m, dl, f = probe["argv"]
    assert {k: v["text"] for k, v in probe["paths"][m]["dir"].items()} == {"rows.txt": "r1\n"}
    assert {k: v["text"] for k, v in probe["paths"][dl]["dir"].items()} == {"rows.txt": "r1\n"}
    assert probe["paths"][f]["text"] == "single"
    # download copies: the job may change its copy, the datastore is untouched.
    assert not Path(dl).resolve().is_relative_to(store.resolve())
    assert f"DIRECT={uri_base}/set" in run.log
    assert probe["env"]["AZURE_ML_INPUT_u"] == f"{uri_base}/set"


# -- outputs ---------------------------------------------------------------------
def test_rw_mount_writes_in_place_upload_publishes_after_the_run_and_default_artifacts(make_run, tmp_path: Path):
    ds = tmp_path / "store"
    o_mount, o_upload = ds / "azureml" / "j" / "mounted", ds / "azureml" / "j" / "uploaded"
    run = make_run(
        "echo one > ${{outputs.m}}/m.txt && mkdir -p ${{outputs.u}}/deep && echo two > ${{outputs.u}}/deep/u.txt && "
        f"(test -f {o_mount}/m.txt && echo MOUNT_DIRECT=yes || echo MOUNT_DIRECT=no) && "
        f"(test -e {o_upload}/deep/u.txt && echo UPLOAD_EARLY=yes || echo UPLOAD_EARLY=no) && "
        "mkdir -p outputs/model && echo weights > outputs/model/w.bin && echo trace > logs/run.log && "
        "echo scratch > scratch.txt"
    )
    run.code({"keep.txt": "code"})
    run.plan["outputs"] = {
        "m": {"type": "uri_folder", "mode": "rw_mount", "uri": "azureml://datastores/workspaceblobstore/paths/azureml/j/mounted/",
              "local_path": str(o_mount)},
        "u": {"type": "uri_folder", "mode": "upload", "uri": "azureml://datastores/workspaceblobstore/paths/azureml/j/uploaded/",
              "local_path": str(o_upload)},
    }
    completed(run)
    assert "MOUNT_DIRECT=yes" in run.log
    assert "UPLOAD_EARLY=no" in run.log
    assert (o_mount / "m.txt").read_text() == "one\n"
    assert (o_upload / "deep" / "u.txt").read_text() == "two\n"
    artifacts = run.dir / "artifacts"
    assert (artifacts / "outputs" / "model" / "w.bin").read_text() == "weights\n"
    assert (artifacts / "logs" / "run.log").read_text() == "trace\n"
    assert not (artifacts / "scratch.txt").exists() and not (artifacts / "keep.txt").exists()


# -- failures ----------------------------------------------------------------------
def test_non_zero_exit_fails_with_user_error_exit_code_and_log_tail(make_run):
    run = make_run("echo first-line; echo the-last-words; echo on-stderr >&2; exit 3")
    state = run.run()
    assert [h["status"] for h in state["history"]] == ["Preparing", "Running", "Finalizing", "Failed"]
    error = state["error"]
    assert error["code"] == "UserError"
    assert error["exit_code"] == 3
    assert "3" in error["message"]
    assert "the-last-words" in error["message"] and "on-stderr" in error["message"]
    assert state["exit_code"] == 3
    assert "on-stderr" in run.log


def test_timeout_fails_with_job_timeout_and_ends_child_processes(make_run, tmp_path: Path):
    pidfile = tmp_path / "sleep.pid"
    run = make_run(f"echo started; sleep 300 & echo $! > {pidfile}; wait", timeout=1)
    started = time.monotonic()
    state = run.run()
    assert time.monotonic() - started < 30
    assert [h["status"] for h in state["history"]] == ["Preparing", "Running", "Finalizing", "Failed"]
    assert state["error"]["code"] == "JobTimeout"
    assert "started" in state["error"]["message"]
    sleep_pid = int(pidfile.read_text())
    wait_until(lambda: not process_alive(sleep_pid), timeout=10, message=f"sleep (pid {sleep_pid}) to end")
    assert not process_alive(state["child_pid"])


def _tree_command(tmp: Path) -> str:
    """A process tree: background children, a grandchild, and a child in a session of its own."""
    return (
        f"setsid bash -c 'echo $$ > {tmp}/setsid.pid; exec sleep 300' & "
        f"sleep 300 & echo $! > {tmp}/child.pid; "
        f"bash -c 'sleep 300 & echo $! > {tmp}/grand.pid; wait' & "
        "echo tree-started; wait"
    )


@pytest.mark.parametrize("how", ["cancel_file", "sigterm"])
def test_cancel_ends_every_process_of_the_tree(make_run, tmp_path: Path, how: str):
    pids_dir = tmp_path / "pids"
    pids_dir.mkdir()
    run = make_run(_tree_command(pids_dir))
    state, pids = run.cancel_tree(how, pids_dir, ["setsid.pid", "child.pid", "grand.pid"])
    assert len(pids) == 4  # the three and the launcher's child shell
    assert [h["status"] for h in state["history"]] == ["Preparing", "Running", "Finalizing", "Canceled"]
    assert state["error"]["code"] == "Canceled"


def test_cancel_requested_before_start_never_runs_the_command(make_run, tmp_path: Path):
    marker = tmp_path / "ran"
    run = make_run(f"touch {marker}")
    (run.dir / "cancel.requested").touch()
    state = run.run()
    assert [h["status"] for h in state["history"]] == ["Preparing", "Canceled"]
    assert not marker.exists()


def test_staging_failure_fails_at_preparing_and_never_runs_the_command(make_run, tmp_path: Path, web: str):
    marker = tmp_path / "ran"
    run = make_run(f"touch {marker}; cat ${{{{inputs.missing}}}}")
    run.plan["inputs"] = {
        "missing": {"kind": "data", "type": "uri_file", "mode": "download", "uri": f"{web}/nope.csv",
                    "source": {"url": f"{web}/nope.csv"}},
    }
    state = run.run()
    assert [h["status"] for h in state["history"]] == ["Preparing", "Failed"]
    assert state["error"]["code"] == "PreparingFailed"
    assert "404" in state["error"]["message"]
    assert not marker.exists()
    assert "child_pid" not in state


# -- edges: cancel while staging, leftovers, secrets ------------------------------
@pytest.fixture
def gated_url():
    with gated_http_file() as (gate, url):
        yield gate, url


@pytest.mark.parametrize("how", ["cancel_file", "sigterm"])
def test_cancel_while_preparing_never_runs_the_command(make_run, tmp_path: Path, gated_url, how: str):
    gate, url = gated_url
    marker = tmp_path / "ran"
    run = make_run(f"touch {marker}; cat ${{{{inputs.slow}}}}")
    run.plan["inputs"] = {"slow": {"kind": "data", "type": "uri_file", "mode": "download", "uri": url,
                                   "source": {"url": url}}}
    launcher = run.start()
    try:
        assert gate.arrived.wait(timeout=20), "the launcher never asked for the input"
        assert run.statuses() == ["Preparing"]
        if how == "cancel_file":
            (run.dir / "cancel.requested").touch()
        else:
            launcher.send_signal(signal.SIGTERM)
        gate.release.set()
        launcher.wait(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    statuses = run.statuses()
    assert statuses[-1] == "Canceled", f"a job canceled while Preparing ended {statuses}"
    assert "Running" not in statuses
    assert not marker.exists(), "the command ran although the job was canceled while Preparing"


def test_background_processes_left_by_a_finished_command_are_ended(make_run, tmp_path: Path):
    pidfile = tmp_path / "leftover.pid"
    run = make_run(f"sleep 300 & echo $! > {pidfile}; echo done")
    completed(run)
    pid = int(pidfile.read_text())
    try:
        wait_until(lambda: not process_alive(pid), timeout=3,
                   message=f"the command's leftover background process (pid {pid}) to end with the job")
    finally:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_the_workspace_token_is_not_passed_to_the_job(make_run, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CIBLE_TOKEN", "server-secret")
    run = make_run('echo "TOKEN=[${CIBLE_TOKEN:-}]"')
    completed(run)
    assert "TOKEN=[]" in run.log
