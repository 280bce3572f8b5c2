"""Attaching a Slurm cluster and each user's own credential on it, against a real Slurm
(cible.testing.slurm: slurmctld and three slurmd on this machine) and a real sshd standing for
its login host (a loopback address of its own, 127.0.0.71), logged in to as the non-root
JOB_USER with a key made by the test.

Two ways in: this server machine's own Slurm commands (`login` left out), or the login host over
SSH (its host key pinned as an attached machine's). Either way sinfo must answer, with the
compute's cible.environment (SLURM_CONF: the test cluster's configuration is not in /etc/slurm),
and nothing is stored when attach is refused."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from cible.server.app import create_app
from cible.server.settings import ServerSettings
from cible.testing import FrozenClock
from cible.testing.slurm import JOB_USER, SlurmTestCluster, needs_slurm, running_cluster
from cible.testing.sshd import LoopbackSshd, keygen, sshd_missing

LOGIN = "127.0.0.71"  # the login host's address: not a Slurm node's (127.0.0.2-4), nor another module's
PARTITIONS = ["debug", "short"]


@pytest.fixture(scope="module", autouse=True)
def _needs_slurm_and_sshd() -> None:
    needs_slurm(sshd_missing)


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmTestCluster]:
    with running_cluster() as slurm:
        yield slurm


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="cible-slurm-attach-"))
    folder.chmod(0o755)  # sshd reads the authorized keys as the login user
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def keys(root: Path) -> dict[str, Path]:
    return {"job": keygen(root / "keys" / "job"), "stranger": keygen(root / "keys" / "stranger")}


@pytest.fixture(scope="module")
def login(root: Path, keys: dict[str, Path], cluster: SlurmTestCluster) -> Iterator[LoopbackSshd]:
    sshd = LoopbackSshd(root / "sshd", (LOGIN,))
    sshd.authorize(JOB_USER, keys["job"].with_suffix(".pub"))
    sshd.start()
    yield sshd
    sshd.stop()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(ServerSettings(home=tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'cible.db'}"), "t",
                     FrozenClock(), reconcile=False)
    try:
        yield TestClient(app, headers={"Authorization": "Bearer t", "X-Cible-User": "alice"},
                         raise_server_exceptions=False)
    finally:
        app.state.store.close()


def local(cluster: SlurmTestCluster, **extra: object) -> dict:
    return {"type": "slurm", "cible": {"environment": cluster.env({})}, **extra}


def over_ssh(cluster: SlurmTestCluster, sshd: LoopbackSshd, key: Path, *, environment: bool = True,
             **extra: object) -> dict:
    settings = {"environment": cluster.env({})} if environment else {}
    return {"type": "slurm", "login": f"ssh://{LOGIN}:{sshd.port}", "cible": settings,
            "ssh_settings": {"admin_username": JOB_USER, "ssh_private_key_file": str(key)}, **extra}


def refused(api: TestClient, name: str, body: dict, code: str = "RemoteHost", reason: str | None = None) -> str:
    response = api.put(f"/api/v1/computes/{name}", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    if reason is not None:
        assert error["details"]["reason"] == reason, error
    assert api.get(f"/api/v1/computes/{name}").status_code == 404  # nothing stored
    return error["message"]


HELLO = {"command": "echo hello", "compute": "hpc"}


# -- this machine's own Slurm commands -------------------------------------------------------------

def test_attach_with_the_local_slurm_commands_finds_the_partitions(api: TestClient, cluster: SlurmTestCluster):
    response = api.put("/api/v1/computes/hpc", json=local(cluster, partition="short"))
    assert response.status_code == 200, response.text
    hpc = response.json()
    assert (hpc["type"], hpc["partitions"], hpc["partition"]) == ("slurm", PARTITIONS, "short")
    assert "login" not in hpc and "host_key" not in hpc
    # Slurm places its jobs itself: not a compute of the cluster reconciler's, and no nodes of cible's.
    assert "hpc" not in api.app.state.computes.cluster_names()
    assert api.get("/api/v1/computes/hpc/nodes").status_code == 400
    # Without a login host jobs run as the server's user: no credential is asked for, nor taken.
    submitted = api.put("/api/v1/jobs/on-local-slurm", json=HELLO)
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["compute"] == "hpc"
    no = api.put("/api/v1/computes/hpc/credentials/me", json={"username": JOB_USER, "ssh_private_key_file": "/k"})
    assert no.status_code == 400, no.text
    assert no.json()["error"]["message"].startswith("compute hpc uses this machine's Slurm commands: jobs run as "
                                                    "the server's user")
    # Partitions are the cluster's, as sinfo said: a body cannot set them.
    forged = api.put("/api/v1/computes/hpc2", json=local(cluster, partitions=["forged"])).json()
    assert forged["partitions"] == PARTITIONS
    # Detach: the compute goes (a job not ended on it holds it).
    held = api.delete("/api/v1/computes/hpc")
    assert held.status_code == 409 and "on-local-slurm" in held.json()["error"]["message"], held.text
    assert api.post("/api/v1/jobs/on-local-slurm:cancel").status_code in (200, 202)
    api.app.state.jobs.store.transact(_end_jobs)
    assert api.delete("/api/v1/computes/hpc").status_code == 204
    assert api.get("/api/v1/computes/hpc").status_code == 404


def _end_jobs(session: Session) -> None:
    """The jobs Canceled, as the reconciler (not run here) would end them."""
    from cible.core.lifecycle.jobs import JobStatus
    from cible.server.store.rows import JobRow

    for row in session.query(JobRow).all():
        row.status = JobStatus.CANCELED.value


def test_a_default_partition_the_cluster_lacks_is_refused(api: TestClient, cluster: SlurmTestCluster):
    message = refused(api, "hpc", local(cluster, partition="gpu"), code="InvalidRequest")
    assert message == "partition: 'gpu' is not a partition of this Slurm cluster (partitions: debug, short)"


def test_without_its_configuration_sinfo_is_refused_with_what_it_said(api: TestClient, cluster: SlurmTestCluster):
    message = refused(api, "hpc", {"type": "slurm"}, reason="no_slurm")
    assert "no Slurm here: sinfo said" in message and "SLURM_CONF" in message
    nowhere = local(cluster)
    nowhere["cible"]["environment"]["PATH"] = "/nonexistent"
    message = refused(api, "hpc", nowhere, reason="no_slurm")
    assert "sinfo not found: give cible.environment.PATH" in message


# -- the login host over SSH --------------------------------------------------------------------------

def test_attach_through_the_login_host_pins_its_key_and_records_the_attaching_users_login(
        api: TestClient, cluster: SlurmTestCluster, login: LoopbackSshd, keys: dict[str, Path]):
    response = api.put("/api/v1/computes/hpc", json=over_ssh(cluster, login, keys["job"]))
    assert response.status_code == 200, response.text
    hpc = response.json()
    assert hpc["host_key_fingerprint"] == login.host_fingerprint and hpc["host_key"].startswith("ssh-ed25519 ")
    assert hpc["partitions"] == PARTITIONS
    assert hpc["cible"]["environment"] == cluster.env({})  # carried: sinfo found the cluster with it
    # The attaching user's login is their credential; the list never shows a key, nor its path.
    listed = api.get("/api/v1/computes/hpc/credentials")
    assert listed.status_code == 200, listed.text
    assert listed.json()["value"] == [{"user": "alice", "username": JOB_USER}]
    assert str(keys["job"]) not in listed.text
    assert api.put("/api/v1/jobs/alices", json=HELLO).status_code == 200
    # replace-host-key works on a login host too: checked against the fingerprint given.
    wrong = api.post("/api/v1/computes/hpc:replace-host-key",
                     json={"expected_host_key_fingerprint": "SHA256:" + "C" * 43})
    assert wrong.status_code == 400 and wrong.json()["error"]["details"]["reason"] == "host_key_mismatch"
    same = api.post("/api/v1/computes/hpc:replace-host-key",
                    json={"expected_host_key_fingerprint": login.host_fingerprint})
    assert same.status_code == 200, same.text
    assert same.json()["previous_host_key_fingerprint"] == login.host_fingerprint


def test_a_login_host_that_refuses_the_key_or_lacks_the_configuration_is_refused(
        api: TestClient, cluster: SlurmTestCluster, login: LoopbackSshd, keys: dict[str, Path]):
    assert "refused the login" in refused(api, "hpc", over_ssh(cluster, login, keys["stranger"]), reason="auth")
    expected = over_ssh(cluster, login, keys["job"], cible={"expected_host_key_fingerprint": "SHA256:" + "D" * 43,
                                                            "environment": cluster.env({})})
    refused(api, "hpc", expected, reason="host_key_mismatch")
    # The login host's sinfo needs SLURM_CONF, as this machine's does: sent in cible.environment.
    message = refused(api, "hpc", over_ssh(cluster, login, keys["job"], environment=False), reason="no_slurm")
    assert f"the login host {JOB_USER}@{LOGIN}:{login.port}: no Slurm here: sinfo said" in message
    nopy = over_ssh(cluster, login, keys["job"])
    nopy["cible"]["python"] = "/nonexistent/python3"
    assert "Python ≥ 3.10" in refused(api, "hpc", nopy, reason="no_python")


def test_set_credential_logs_in_and_a_submit_without_one_is_refused(
        api: TestClient, cluster: SlurmTestCluster, login: LoopbackSshd, keys: dict[str, Path], tmp_path: Path):
    assert api.put("/api/v1/computes/hpc", json=over_ssh(cluster, login, keys["job"])).status_code == 200
    bob = {"X-Cible-User": "bob"}
    # bob has none: his job is refused at submit, with what to do.
    response = api.put("/api/v1/jobs/bobs", json=HELLO, headers=bob)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith(
        "compute hpc runs jobs as each user's own Slurm identity and you (user bob) have none: "
        "cible compute set-credential hpc --username … --ssh-private-key-file …")
    assert api.get("/api/v1/jobs/bobs").status_code == 404
    validated = api.post("/api/v1/jobs/bobs:validate", json=HELLO, headers=bob)
    assert validated.status_code == 400 and "you (user bob) have none" in validated.text
    # A key the login host does not take is refused with the reason; nothing is recorded.
    wrong = api.put("/api/v1/computes/hpc/credentials/me", headers=bob,
                    json={"username": JOB_USER, "ssh_private_key_file": str(keys["stranger"])})
    assert wrong.status_code == 400 and wrong.json()["error"]["details"]["reason"] == "auth", wrong.text
    missing = api.put("/api/v1/computes/hpc/credentials/me", headers=bob,
                      json={"username": JOB_USER, "ssh_private_key_file": "/nonexistent/key"})
    assert missing.status_code == 400 and missing.json()["error"]["details"]["reason"] == "key_file"
    for bad in ({"username": "bob smith", "ssh_private_key_file": str(keys["job"])}, {"username": JOB_USER}):
        answer = api.put("/api/v1/computes/hpc/credentials/me", headers=bob, json=bad)
        assert answer.status_code == 400 and answer.json()["error"]["details"]["field"] in (
            "username", "ssh_private_key_file"), answer.text
    assert api.put("/api/v1/jobs/bobs", json=HELLO, headers=bob).status_code == 400
    # His own login: checked by logging in, then his jobs are taken.
    ok = api.put("/api/v1/computes/hpc/credentials/me", headers=bob,
                 json={"username": JOB_USER, "ssh_private_key_file": str(keys["job"])})
    assert ok.status_code == 200, ok.text
    assert (ok.json()["user"], ok.json()["username"]) == ("bob", JOB_USER)
    assert api.app.state.computes.credentials.get("hpc", "bob").key_file == str(keys["job"])
    assert api.put("/api/v1/jobs/bobs", json=HELLO, headers=bob).status_code == 200
    # A client that names no user is the user "" (recorded as such, and refused like anyone without one).
    nobody = {"X-Cible-User": ""}
    refused_nobody = api.put("/api/v1/jobs/nobodys", json=HELLO, headers=nobody)
    assert "you (a client that sent no X-Cible-User) have none" in refused_nobody.text
    assert api.put("/api/v1/computes/hpc/credentials/me", headers=nobody,
                   json={"username": JOB_USER, "ssh_private_key_file": str(keys["job"])}).json()["user"] == ""
    users = [c["user"] for c in api.get("/api/v1/computes/hpc/credentials").json()["value"]]
    assert users == ["", "alice", "bob"]
    # Only the key's path is stored: never the key.
    private = keys["job"].read_text()
    secret = "".join(line for line in private.splitlines() if not line.startswith("-----"))[120:180]
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("cible.db*"))  # the database and its WAL
    assert secret.encode() not in stored and str(keys["job"]).encode() in stored
    # Removed: refused again; a second removal says there is none.
    assert api.delete("/api/v1/computes/hpc/credentials/me", headers=bob).status_code == 204
    assert api.delete("/api/v1/computes/hpc/credentials/me", headers=bob).status_code == 404
    assert api.put("/api/v1/jobs/bobs2", json=HELLO, headers=bob).status_code == 400
    # Detached, its credentials go with it.
    api.app.state.jobs.store.transact(_end_jobs)
    assert api.delete("/api/v1/computes/hpc").status_code == 204
    assert api.app.state.computes.credentials.get("hpc", "alice") is None
