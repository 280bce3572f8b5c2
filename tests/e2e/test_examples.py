"""Every examples/jobs/*.yml, run with `cible job create -f X --stream -o json`, checked against EXPECTED.

A new example is picked up automatically; one with no entry in EXPECTED fails, so no example
goes unchecked.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from e2e_support import EXAMPLES, Workspace

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Expect:
    status: str = "Completed"
    log: tuple[str, ...] = ()  # substrings of artifacts/user_logs/std_log.txt
    error_code: str | None = None
    exit_code: int | None = None
    named_outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # output -> {relative file: content substring}
    artifacts: dict[str, str] = field(default_factory=dict)  # file under artifacts/ (download --all) -> content substring
    compute: str | None = None
    warning: tuple[str, ...] = ()  # substrings that one warning must contain


EXPECTED: dict[str, Expect] = {
    "hello-world.yml": Expect(log=("hello world",), compute="local"),
    "hello-env-vars.yml": Expect(log=("greeting=hello target=environment variables run=",)),
    "hello-literal-inputs.yml": Expect(log=("greeting=hello count=42 verbose=", "rate=0.5")),
    "hello-file-input.yml": Expect(log=("sepal_length,sepal_width", "6.3,3.3,6.0,2.5,virginica", "rows: 3")),
    "hello-folder-input.yml": Expect(log=("notes.txt", "values.csv", "notes from the folder input")),
    "hello-outputs.yml": Expect(
        log=("wrote outputs/hello.txt",),
        artifacts={"artifacts/outputs/hello.txt": "artifact from hello-outputs"},
    ),
    "hello-named-output.yml": Expect(
        log=("wrote the named output result",),
        named_outputs={"result": {"result.txt": "named output content"}},
    ),
    "hello-code.yml": Expect(log=("HELLO FROM THE CODE SNAPSHOT!", "snapshot ok: secret.txt excluded")),
    "hello-serverless.yml": Expect(
        log=("hello from serverless",), compute="serverless", warning=("runs on serverless compute",),
    ),
    "hello-distributed.yml": Expect(
        log=("rank=0 local_rank=0 node_rank=0 world=2 master=127.0.0.1:",),
        artifacts={"artifacts/user_logs/std_log_process_1.txt": "rank=1 local_rank=1 node_rank=0 world=2"},
    ),
    "failing.yml": Expect(status="Failed", log=("about to fail",), exit_code=3),
    "timeout.yml": Expect(status="Failed", log=("sleeping past the limit",), error_code="JobTimeout"),
}

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yml"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """The examples run as a user would run them: a job with no compute on serverless (nodes made for it)."""
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    del ws.env["CIBLE_DEFAULT_COMPUTE"]
    yield ws
    ws.stop()


def test_examples_exist():
    assert EXAMPLE_FILES, f"no examples in {EXAMPLES}"


def test_every_table_entry_has_an_example():
    stale = sorted(set(EXPECTED) - {p.name for p in EXAMPLE_FILES})
    assert not stale, f"EXPECTED lists examples that no longer exist: {stale}"


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])
def test_example(example: Path, workspace: Workspace, tmp_path: Path, files_of):
    expect = EXPECTED.get(example.name)
    if expect is None:
        pytest.fail(f"{example.name} has no entry in EXPECTED in {Path(__file__).name}; add what it must do")

    name = f"e2e-{example.stem}-{uuid.uuid4().hex[:8]}"
    proc = workspace.cible("job", "create", "-f", example, "-n", name, "--stream", "-o", "json", check=False)
    where = f"\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"

    if expect.status == "Completed":
        assert proc.returncode == 0, f"{example.name} did not complete (exit {proc.returncode}){where}"
        streamed = json.loads(proc.stdout)
        assert streamed["name"] == name
        assert streamed["status"] == "Completed", where
        for text in expect.log:  # -o json streams the log to stderr
            assert text in proc.stderr, f"streamed log lacks {text!r}{where}"
    else:
        assert proc.returncode != 0, f"--stream must exit non-zero when the job fails{where}"
        assert "error:" in proc.stderr, where

    job = workspace.job(name)
    assert job["status"] == expect.status, job
    if expect.status == "Completed":
        assert not job.get("error"), job["error"]
    else:
        error = job.get("error") or {}
        assert error.get("message"), f"a failed job says why: {job}"
        if expect.error_code:
            assert error.get("code") == expect.error_code, error
        if expect.exit_code is not None:
            assert error.get("exit_code") == expect.exit_code, error
    if expect.compute:
        assert job["compute"] == expect.compute, job
    for text in expect.warning:
        assert any(text in w for w in job.get("warnings") or []), f"no warning mentions {text!r}: {job.get('warnings')}"

    # The log, as `az ml job download --all` would fetch it.
    log = workspace.downloaded_log(name, tmp_path / "all")
    for text in expect.log:
        assert text in log, f"std_log.txt lacks {text!r}:\n{log}"
    for rel, text in expect.artifacts.items():
        path = tmp_path / "all" / rel
        assert path.is_file(), f"{rel} not downloaded by --all; got {sorted(files_of(tmp_path / 'all'))}"
        assert text in path.read_text(), path.read_text()
    for output, contents in expect.named_outputs.items():
        # --all brings every named output too
        for rel, text in contents.items():
            path = tmp_path / "all" / "named-outputs" / output / rel
            assert path.is_file(), f"--all did not fetch named output {output}/{rel}; got {sorted(files_of(tmp_path / 'all'))}"
            assert text in path.read_text()
        # --output-name fetches just that output
        dest = tmp_path / f"only-{output}"
        workspace.cible("job", "download", "-n", name, "--output-name", output, "-p", dest)
        got = sorted(files_of(dest))
        for rel, text in contents.items():
            path = dest / "named-outputs" / output / rel
            assert path.is_file(), f"--output-name {output} did not fetch {rel}; got {got}"
            assert text in path.read_text()
        assert all(f.startswith(f"named-outputs/{output}/") for f in got), got
        assert job.get("output_uris", {}).get(output), f"output_uris lacks {output}: {job.get('output_uris')}"


def test_download_without_flags_fetches_only_artifacts(workspace: Workspace, tmp_path: Path, files_of):
    name = f"e2e-dl-{uuid.uuid4().hex[:8]}"
    workspace.cible("job", "create", "-f", EXAMPLES / "hello-named-output.yml", "-n", name, "--stream", "-o", "json")
    dest = tmp_path / "plain"
    workspace.cible("job", "download", "-n", name, "-p", dest)
    got = sorted(files_of(dest))
    assert got, "plain download fetched nothing"
    assert all(f.startswith("artifacts/") for f in got), got
    assert "artifacts/user_logs/std_log.txt" in got, got
