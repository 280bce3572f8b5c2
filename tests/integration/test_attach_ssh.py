"""Attaching a machine over SSH against a real sshd on loopback addresses (127.0.0.x), with keys
made by the test: the host key is pinned at attach and never ignored afterwards, every way a host
cannot be used is refused with its reason, and nothing of it is stored when it is."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cible.backends.ssh import connect as ssh_connect
from cible.server.app import create_app
from cible.server.settings import ServerSettings
from cible.testing import FrozenClock
from cible.testing.sshd import LoopbackSshd, keygen, sshd_missing



@pytest.fixture(scope="module", autouse=True)
def _needs_sshd() -> None:
    if why := sshd_missing():  # CI installs openssh-server (scripts/test.sh): there, a missing sshd fails
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(why)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    return {"good": keygen(root / "good"), "stranger": keygen(root / "stranger")}


def _sshd(root: Path, keys: dict[str, Path], addresses: tuple[str, ...], extra: str = "") -> LoopbackSshd:
    sshd = LoopbackSshd(root, addresses, extra)
    sshd.authorize("root", keys["good"].with_suffix(".pub"))
    return sshd.start()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]) -> Iterator[LoopbackSshd]:
    server = _sshd(tmp_path_factory.mktemp("sshd"), keys, ("127.0.0.2", "127.0.0.3"))
    yield server
    server.stop()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(ServerSettings(home=tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'cible.db'}"), "t",
                     FrozenClock(), reconcile=False)
    try:
        yield TestClient(app, headers={"Authorization": "Bearer t"}, raise_server_exceptions=False)
    finally:
        app.state.store.close()


def vm(sshd: LoopbackSshd, key: Path, host: str = "127.0.0.2", **extra: object) -> dict:
    return {"type": "virtualmachine", "resource_id": f"ssh://{host}:{sshd.port}",
            "ssh_settings": {"admin_username": "root", "ssh_private_key_file": str(key)}, **extra}


def refused(api: TestClient, name: str, body: dict, reason: str) -> str:
    response = api.put(f"/api/v1/computes/{name}", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["details"]["reason"]) == ("RemoteHost", reason), error
    assert api.get(f"/api/v1/computes/{name}").status_code == 404  # nothing stored
    return error["message"]


def test_attach_pins_the_host_key_and_probes_the_host(api: TestClient, sshd: LoopbackSshd, keys: dict[str, Path]):
    response = api.put("/api/v1/computes/box", json=vm(sshd, keys["good"]))
    assert response.status_code == 200, response.text
    box = response.json()
    assert box["host_key_fingerprint"] == sshd.host_fingerprint
    assert box["host_key"].startswith("ssh-ed25519 ")
    facts = box["host_facts"]
    assert facts["cpus"] >= 1 and facts["memory_gb"] > 0 and facts["python_version"].startswith("3.")
    assert facts["machine"] and facts["system"] == "Linux"
    # A client cannot pin a key of its own choosing: the read-only fields it sends are dropped.
    forged = {**vm(sshd, keys["good"], host="127.0.0.3"), "host_key": "ssh-ed25519 AAAAforged",
              "host_key_fingerprint": "SHA256:forged"}
    other = api.put("/api/v1/computes/box3", json=forged).json()
    assert other["host_key_fingerprint"] == sshd.host_fingerprint and "forged" not in other["host_key"]
    # The same name again is a conflict, said before any connection.
    again = api.put("/api/v1/computes/box", json=vm(sshd, keys["good"]))
    assert again.status_code == 409 and "--replace-host-key" in again.json()["error"]["message"]


def test_an_expected_fingerprint_is_checked_not_trusted(api: TestClient, sshd: LoopbackSshd, keys: dict[str, Path]):
    good = vm(sshd, keys["good"], cible={"expected_host_key_fingerprint": sshd.host_fingerprint})
    assert api.put("/api/v1/computes/checked", json=good).status_code == 200
    wrong = "SHA256:" + "A" * 43
    message = refused(api, "wrong", vm(sshd, keys["good"], cible={"expected_host_key_fingerprint": wrong}),
                      "host_key_mismatch")
    assert sshd.host_fingerprint in message and wrong in message


def test_a_key_the_host_does_not_know_is_refused(api: TestClient, sshd: LoopbackSshd, keys: dict[str, Path]):
    message = refused(api, "stranger", vm(sshd, keys["stranger"]), "auth")
    assert "refused the login" in message and "authorized_keys" in message


def test_key_files_are_checked_as_ssh_checks_them(api: TestClient, sshd: LoopbackSshd, keys: dict[str, Path],
                                                  tmp_path: Path):
    shared = tmp_path / "shared_key"
    shutil.copy(keys["good"], shared)
    shared.chmod(0o644)
    assert "chmod 600" in refused(api, "open", vm(sshd, shared), "key_file")
    assert "not an absolute path" in refused(api, "rel", vm(sshd, Path("id_ed25519")), "key_file")
    assert "No such file" in refused(api, "gone", vm(sshd, tmp_path / "nope"), "key_file")
    nowhere = {**vm(sshd, tmp_path / "nope"), "resource_id": "ssh://127.0.0.2:1"}  # said before any connection
    assert "No such file" in refused(api, "gone-too", nowhere, "key_file")
    locked = keygen(tmp_path / "locked")
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "s3cret", "-f", str(locked)], check=True)
    assert "ssh-agent" in refused(api, "locked", vm(sshd, locked), "key_file")


def test_a_port_without_sshd_is_refused(api: TestClient, keys: dict[str, Path], sshd: LoopbackSshd):
    body = vm(sshd, keys["good"])
    body["resource_id"] = "ssh://127.0.0.2:1"
    assert "connection refused" in refused(api, "closed", body, "refused")


def test_a_host_without_python_is_refused(api: TestClient, sshd: LoopbackSshd, keys: dict[str, Path]):
    message = refused(api, "nopy", vm(sshd, keys["good"], cible={"python": "/nonexistent/python3"}), "no_python")
    assert "Python ≥ 3.10" in message and "cible.python" in message


def test_a_password_is_refused_and_never_echoed(api: TestClient, sshd: LoopbackSshd, keys: dict[str, Path]):
    body = vm(sshd, keys["good"])
    body["ssh_settings"]["admin_password"] = "hunter2-secret"
    response = api.put("/api/v1/computes/pw", json=body)
    assert response.status_code == 422 and "SSH keys only" in response.text and "hunter2" not in response.text


def test_a_frozen_host_times_out(api: TestClient, keys: dict[str, Path], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ssh_connect, "CONNECT_TIMEOUT_S", 2.0)
    frozen = _sshd(tmp_path / "frozen", keys, ("127.0.0.4",))
    try:
        frozen.freeze()
        assert "no SSH answer within 2 s" in refused(api, "frozen", vm(frozen, keys["good"], "127.0.0.4"), "timeout")
    finally:
        frozen.stop()


def test_a_changed_host_key_is_refused_until_replaced_on_purpose(api: TestClient, keys: dict[str, Path],
                                                                  tmp_path: Path):
    host = _sshd(tmp_path / "reinstalled", keys, ("127.0.0.5",))
    try:
        assert api.put("/api/v1/computes/box", json=vm(host, keys["good"], "127.0.0.5")).status_code == 200
        pinned = host.host_fingerprint
        host.new_host_key()
        changed = api.post("/api/v1/computes/box:replace-host-key",
                           json={"expected_host_key_fingerprint": "SHA256:" + "B" * 43})
        assert changed.status_code == 400 and changed.json()["error"]["details"]["reason"] == "host_key_mismatch"
        assert api.get("/api/v1/computes/box").json()["host_key_fingerprint"] == pinned  # unchanged
        # Every later login is pinned: the new key is refused with both fingerprints.
        from cible.backends.ssh.probe import run_sync
        from cible.core.models.computes import VirtualMachineCompute
        from cible.server.services.attach import ssh_target

        box = VirtualMachineCompute.model_validate({k: v for k, v in api.get("/api/v1/computes/box").json().items()
                                                    if k in VirtualMachineCompute.model_fields})
        with pytest.raises(ssh_connect.RemoteHostError) as error:
            run_sync(ssh_connect.connect(ssh_target(box)))
        assert error.value.details["reason"] == "host_key_changed"
        assert pinned in error.value.message and host.host_fingerprint in error.value.message
        assert "--replace-host-key" in error.value.message
        replaced = api.post("/api/v1/computes/box:replace-host-key",
                            json={"expected_host_key_fingerprint": host.host_fingerprint})
        assert replaced.status_code == 200, replaced.text
        assert (replaced.json()["previous_host_key_fingerprint"], replaced.json()["host_key_fingerprint"]) == (
            pinned, host.host_fingerprint)
    finally:
        host.stop()


def test_no_key_material_is_stored_or_answered(api: TestClient, sshd: LoopbackSshd, keys: dict[str, Path],
                                               tmp_path: Path):
    response = api.put("/api/v1/computes/secret-box", json=vm(sshd, keys["good"]))
    assert response.status_code == 200
    private = keys["good"].read_text()
    secret = "".join(line for line in private.splitlines() if not line.startswith("-----"))[120:180]  # past the header
    assert secret not in response.text
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("cible.db*"))  # the database and its WAL
    assert secret.encode() not in stored and str(keys["good"]).encode() in stored  # the path only


def test_a_machine_of_a_cluster_is_not_detached_under_it(api: TestClient, sshd: LoopbackSshd,
                                                         keys: dict[str, Path]):
    assert api.put("/api/v1/computes/box", json=vm(sshd, keys["good"])).status_code == 200
    cluster = {"type": "amlcompute", "size": "Standard_DS1_v2", "max_instances": 1,
               "cible": {"provider": "ssh", "hosts": ["box"]}}
    wrong = api.put("/api/v1/computes/pair", json={**cluster, "cible": {"provider": "ssh", "hosts": ["nobox"]}})
    assert wrong.status_code == 400 and "'nobox' (does not exist)" in wrong.json()["error"]["message"]
    too_many = api.put("/api/v1/computes/pair", json={**cluster, "max_instances": 2})
    assert too_many.status_code == 422 and "each node is one machine" in too_many.json()["error"]["message"]
    assert api.put("/api/v1/computes/pair", json=cluster).status_code == 200
    refused = api.delete("/api/v1/computes/box")
    assert refused.status_code == 409 and "cluster(s) pair" in refused.json()["error"]["message"]
    assert api.delete("/api/v1/computes/pair").status_code == 204
    assert api.delete("/api/v1/computes/box").status_code == 204
