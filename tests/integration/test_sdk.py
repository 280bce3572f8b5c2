"""The Python SDK against a real server process, auto-started by `MLClient(home=…)`.

One workspace and server for the whole module; it is stopped at teardown.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from integration_support import gated_http_file, process_alive, wait_until

from cible import Input, MLClient, Output, command, load_job
from cible.core.errors import JobFailedError, UnauthorizedError

JOB_TIMEOUT_S = 60

MAIN_PY = textwrap.dedent(
    """
    import argparse, os
    p = argparse.ArgumentParser()
    p.add_argument("--x", type=int)
    p.add_argument("--data")
    p.add_argument("--out")
    a = p.parse_args()
    print(f"x={a.x}")
    print("data=" + open(a.data).read().strip())
    print("files=" + ",".join(sorted(
        os.path.relpath(os.path.join(b, n), ".") for b, _, ns in os.walk(".") for n in ns)))
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/metrics.txt", "w") as fh:
        fh.write(f"x={a.x}")
    if a.out:
        with open(os.path.join(a.out, "result.txt"), "w") as fh:
            fh.write(f"result {a.x * 2}")
    """
)


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("sdk_ws")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("CIBLE_URL", "CIBLE_TOKEN", "CIBLE_DATABASE_URL"):
            mp.delenv(var, raising=False)
        mp.setenv("CIBLE_HOME", str(home))
        yield home
        _stop_server(home)


def _stop_server(home: Path) -> None:
    info_file = home / "server.json"
    pid = json.loads(info_file.read_text())["pid"] if info_file.exists() else None
    subprocess.run(
        [sys.executable, "-m", "cible", "server", "stop", "--home", str(home)],
        env={**os.environ, "CIBLE_HOME": str(home)}, capture_output=True, timeout=30,
    )
    if pid is not None and process_alive(pid):
        os.kill(pid, 9)


@pytest.fixture(scope="module")
def client(home: Path):
    ml = MLClient(home=home)
    yield ml
    ml.close()


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    code = tmp_path_factory.mktemp("code")
    (code / "main.py").write_text(MAIN_PY)
    return code


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "table.csv"
    path.write_text("a,b\n")
    return path


def _wait_terminal(client: MLClient, name: str) -> Any:
    job = client.jobs.wait(name, timeout=JOB_TIMEOUT_S)
    assert job["status"] in ("Completed", "Failed", "Canceled"), f"job {name} still {job['status']}"
    return job


# -- the server process ------------------------------------------------------------
def test_mlclient_starts_a_server_and_a_second_client_reuses_it(client: MLClient, home: Path):
    info = json.loads((home / "server.json").read_text())
    assert process_alive(info["pid"])
    assert info["url"].startswith("http://127.0.0.1:")
    assert client.url.rstrip("/").startswith(info["url"])
    with MLClient(home=home) as second:
        assert second.url == client.url
        assert [c["name"] for c in second.compute.list()]
    assert json.loads((home / "server.json").read_text())["pid"] == info["pid"]


def test_wrong_token_is_unauthorized_on_first_call(client: MLClient):
    intruder = MLClient(url=client.url, token="wrong")
    try:
        with pytest.raises(UnauthorizedError):
            intruder.jobs.list(max_results=1)
    finally:
        intruder.close()


def test_compute_list_has_local(client: MLClient):
    names = [c["name"] for c in client.compute.list()]
    assert "local" in names
    assert client.compute.get("local")["name"] == "local"


# -- a command job, end to end --------------------------------------------------
def test_command_job_streams_and_downloads(client: MLClient, code_dir: Path, csv_file: Path, tmp_path: Path):
    job = command(
        command="python main.py --x ${{inputs.x}} --data ${{inputs.data}} --out ${{outputs.o}}",
        code=code_dir,
        inputs={"x": 3, "data": Input(type="uri_file", path=str(csv_file))},
        outputs={"o": Output(type="uri_folder")},
        compute="local",
    )
    created = client.jobs.create_or_update(job)
    name = created["name"]
    out = io.BytesIO()
    final = client.jobs.stream(name, out=out)
    assert final["status"] == "Completed"
    text = out.getvalue().decode()
    assert "x=3" in text and "data=a,b" in text

    everything = tmp_path / "all"
    client.jobs.download(name, download_path=everything, all=True)
    assert "x=3" in (everything / "artifacts" / "user_logs" / "std_log.txt").read_text()
    assert (everything / "artifacts" / "outputs" / "metrics.txt").read_text() == "x=3"
    assert (everything / "named-outputs" / "o" / "result.txt").read_text() == "result 6"

    only = tmp_path / "only"
    client.jobs.download(name, download_path=only, output_name="o")
    assert [p.relative_to(only).as_posix() for p in _files_under(only)] == ["named-outputs/o/result.txt"]


def test_load_job_honours_amlignore_nested_gitignore_and_params_override(client: MLClient, csv_file: Path, tmp_path: Path):
    code = tmp_path / "src"
    (code / "pkg" / "cache").mkdir(parents=True)
    (code / "main.py").write_text(MAIN_PY)
    (code / ".amlignore").write_text("*.secret\nbig_data/\n")
    (code / "creds.secret").write_text("no")
    (code / "big_data").mkdir()
    (code / "big_data" / "huge.bin").write_text("no")
    (code / "pkg" / "mod.py").write_text("X = 1\n")
    (code / "pkg" / ".gitignore").write_text("*.tmp\ncache/\n")
    (code / "pkg" / "scratch.tmp").write_text("no")
    (code / "pkg" / "cache" / "c.bin").write_text("no")
    (code / "top.tmp").write_text("kept: the nested .gitignore applies to pkg/ only")
    spec = tmp_path / "job.yml"
    spec.write_text(textwrap.dedent(
        f"""\
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        command: python main.py --x ${{{{inputs.x}}}} --data ${{{{inputs.data}}}}
        code: src
        inputs:
          x: 1
          data:
            type: uri_file
            path: {csv_file}
        compute: local
        """
    ))
    job = load_job(spec, params_override=[{"inputs.x": 5}])
    name = client.jobs.create_or_update(job)["name"]
    out = io.BytesIO()
    client.jobs.stream(name, out=out)
    text = out.getvalue().decode()
    assert "x=5" in text
    files_line = next(ln for ln in text.splitlines() if ln.startswith("files="))
    files = set(files_line[len("files="):].split(","))
    assert {"main.py", "pkg/mod.py", "top.tmp"} <= files, files
    for ignored in ("creds.secret", "big_data/huge.bin", "pkg/scratch.tmp", "pkg/cache/c.bin"):
        assert ignored not in files, f"{ignored} should have been ignored; the job saw {sorted(files)}"


def test_failing_job_stream_raises_and_error_has_exit_code(client: MLClient):
    job = command(command="echo about-to-fail; exit 7", compute="local")
    name = client.jobs.create_or_update(job)["name"]
    out = io.BytesIO()
    with pytest.raises(JobFailedError):
        client.jobs.stream(name, out=out)
    assert b"about-to-fail" in out.getvalue()
    got = client.jobs.get(name)
    assert got["status"] == "Failed"
    assert got.error["exit_code"] == 7
    assert got.error["code"] == "UserError"


def test_begin_cancel_returns_a_canceled_job_and_ends_its_processes(client: MLClient, home: Path):
    job = command(command="echo cancel-me; sleep 300", compute="local")
    name = client.jobs.create_or_update(job)["name"]
    state_file = home / "runs" / name / "state.json"

    def running() -> dict[str, Any] | None:
        if client.jobs.get(name)["status"] != "Running" or not state_file.exists():
            return None
        state = json.loads(state_file.read_text())
        return state if "child_pid" in state else None

    state = wait_until(running, timeout=JOB_TIMEOUT_S, message=f"job {name} to run")
    canceled = client.jobs.begin_cancel(name).result(timeout=JOB_TIMEOUT_S)
    assert canceled["status"] == "Canceled"
    assert canceled["name"] == name
    wait_until(lambda: not process_alive(state["child_pid"]), timeout=15, message="the job's shell to end")


def test_list_max_results(client: MLClient):
    names = [client.jobs.create_or_update(command(command="echo listed", compute="local"))["name"] for _ in range(3)]
    for name in names:
        _wait_terminal(client, name)
    listed = client.jobs.list(max_results=2)
    assert len(listed) == 2
    assert len({j["name"] for j in listed}) == 2
    assert len(client.jobs.list()) >= 3


def test_lists_follow_every_page(client: MLClient, monkeypatch: pytest.MonkeyPatch):
    for name in ("paged-a", "paged-b", "paged-c"):
        client.data.create_or_update({"name": name, "type": "uri_file", "path": "https://example.com/d.csv"})
    client.data.create_or_update({"name": "paged-a", "type": "uri_file", "path": "https://example.com/e.csv"})
    monkeypatch.setattr(client._client, "page_size", 2)  # the server answers 2 at a time
    assert [a["name"] for a in client.data.list() if a["name"].startswith("paged-")] == ["paged-a", "paged-b", "paged-c"]
    assert [a["version"] for a in client.data.list(name="paged-a")] == ["2", "1"]


def test_second_submission_of_the_same_code_uploads_no_new_blobs(client: MLClient, home: Path, tmp_path: Path, csv_file: Path):
    code = tmp_path / "dedup"
    code.mkdir()
    (code / "main.py").write_text(MAIN_PY + "\n# dedup test\n")
    blob_root = home / "datastores" / "workspaceblobstore" / "LocalUpload" / "blobs"

    def submit() -> str:
        job = command(command="python main.py --x ${{inputs.x}} --data ${{inputs.data}}", code=code,
                      inputs={"x": 1, "data": Input(type="uri_file", path=str(csv_file))}, compute="local")
        return client.jobs.create_or_update(job)["name"]

    before_first = len(_files_under(blob_root))
    first = submit()
    after_first = _files_under(blob_root)
    assert len(after_first) > before_first  # a new code file and its manifest
    second = submit()
    assert second != first
    assert _files_under(blob_root) == after_first
    for name in (first, second):
        assert _wait_terminal(client, name)["status"] == "Completed"


def test_begin_cancel_while_preparing_cancels_before_the_command_runs(client: MLClient, tmp_path: Path):
    marker = tmp_path / "ran"
    with gated_http_file() as (gate, url):
        job = command(command=f"touch {marker}; cat ${{{{inputs.slow}}}}", compute="local",
                      inputs={"slow": Input(type="uri_file", path=url, mode="download")})
        name = client.jobs.create_or_update(job)["name"]
        assert gate.arrived.wait(timeout=JOB_TIMEOUT_S), "the job never asked for its input"
        poller = client.jobs.begin_cancel(name)
        # A cancel is asynchronous: let the input arrive only once the launcher has been told.
        wait_until(lambda: (client.paths.home / "runs" / name / "cancel.requested").exists(), JOB_TIMEOUT_S,
                   message="the cancel to reach the launcher")
        gate.release.set()
        final = poller.result(timeout=JOB_TIMEOUT_S)
    assert final["status"] == "Canceled", f"a job canceled while Preparing ended {final['status']}"
    assert not marker.exists(), "the command ran although the job was canceled while Preparing"


# -- az ml verbs: model download, archive / restore, job update and validate -----------------
def test_model_download_writes_the_name_then_the_basename_of_its_path(client: MLClient, tmp_path: Path):
    model_dir = tmp_path / "src" / "model"
    (model_dir / "sub").mkdir(parents=True)
    (model_dir / "weights.pkl").write_bytes(b"w" * 3)
    (model_dir / "sub" / "conf.json").write_text("{}")
    folder = client.models.create_or_update({"name": "sdk-net", "path": str(model_dir)})
    out = tmp_path / "out"
    written = client.models.download("sdk-net", folder["version"], download_path=out)
    assert sorted(p.relative_to(out).as_posix() for p in written) == ["sdk-net/model/sub/conf.json",
                                                                      "sdk-net/model/weights.pkl"]
    assert (out / "sdk-net" / "model" / "weights.pkl").read_bytes() == b"www"
    single = client.models.create_or_update({"name": "sdk-net", "path": str(model_dir / "weights.pkl")})
    client.models.archive("sdk-net", version=single["version"])
    assert [m.version for m in client.models.list("sdk-net")] == [folder["version"]]
    assert [m.version for m in client.models.list("sdk-net", list_view_type="All")] == [single["version"],
                                                                                         folder["version"]]
    latest = client.models.download("sdk-net", download_path=tmp_path / "latest")  # the newest not archived
    assert sorted(p.name for p in latest) == ["conf.json", "weights.pkl"]
    by_version = client.models.download("sdk-net", single["version"], tmp_path / "one")  # archived: by version
    assert [p.relative_to(tmp_path / "one").as_posix() for p in by_version] == ["sdk-net/weights.pkl"]
    client.models.restore("sdk-net", version=single["version"])
    assert client.models.get("sdk-net", label="latest")["version"] == single["version"]


def test_model_download_of_files_whose_names_hold_url_characters(client: MLClient, tmp_path: Path):
    # `#` and `?` would end the URL's path, and `%41` is a file name, not an escape for `A`: each is
    # quoted by the SDK and decoded once by the server.
    names = ["a#b.txt", "x?y.txt", "%41.txt", "100%.txt", "sp ace.txt"]
    model_dir = tmp_path / "src" / "odd"
    model_dir.mkdir(parents=True)
    for name in names:
        (model_dir / name).write_text(name)
    model = client.models.create_or_update({"name": "sdk-odd", "path": str(model_dir)})
    out = tmp_path / "out"
    written = client.models.download("sdk-odd", model["version"], download_path=out)
    assert {p.relative_to(out).as_posix(): p.read_text() for p in written} == {f"sdk-odd/odd/{n}": n for n in names}
    assert not [p for p in out.rglob("*.part")]


def test_job_archive_update_and_validate_through_the_sdk(client: MLClient):
    from cible.sdk.resources import ListViewType

    name = client.jobs.create_or_update(command(command="echo archived", compute="local"))["name"]
    _wait_terminal(client, name)
    assert client.jobs.archive(name)["is_archived"] is True
    assert name not in [j.name for j in client.jobs.list()]
    assert name in [j.name for j in client.jobs.list(list_view_type=ListViewType.ARCHIVED_ONLY)]
    client.jobs.restore(name)
    assert name in [j.name for j in client.jobs.list()]
    updated = client.jobs.update(name, display_name="shown", tags={"k": "v"})
    assert (updated.display_name, updated.tags) == ("shown", {"k": "v"})
    passed = client.jobs.validate(command(command="echo fine", compute="local"))
    assert passed.passed is True and passed.target == "local"
    failed = client.jobs.validate(command(command="echo x", compute="local", resources={"instance_count": 2}))
    assert failed.passed is False and "resources.instance_count" in failed.error_messages
