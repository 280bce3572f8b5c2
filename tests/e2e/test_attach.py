"""`cible compute attach|detach` against a real server and a real sshd on a loopback address:
the host key shown and pinned, YAML errors placed at file:line, no key material in the workspace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Workspace, write_yaml

from cible.testing.sshd import LoopbackSshd, keygen, sshd_missing



@pytest.fixture(scope="module", autouse=True)
def _needs_sshd() -> None:
    if why := sshd_missing():  # CI installs openssh-server (scripts/test.sh): there, a missing sshd fails
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(why)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopbackSshd, Path]]:
    root = tmp_path_factory.mktemp("attach-sshd")
    key = keygen(root / "keys" / "id_ed25519")
    server = LoopbackSshd(root / "sshd", ("127.0.0.6",))
    server.authorize("root", key.with_suffix(".pub"))
    server.start()
    yield server, key
    server.stop()


def test_attach_shows_the_pinned_host_key_then_detach(workspace: Workspace, sshd: tuple[LoopbackSshd, Path]):
    server, key = sshd
    proc = workspace.cible("compute", "attach", "--type", "virtualmachine", "--name", "box", "--host", "127.0.0.6",
                           "--ssh-port", server.port, "--admin-username", "root", "--ssh-private-key-file", key)
    assert f"host key {server.host_fingerprint} of 127.0.0.6 was trusted on first use" in proc.stderr
    shown = workspace.json("compute", "show", "-n", "box")
    assert (shown["type"], shown["host_key_fingerprint"]) == ("virtualmachine", server.host_fingerprint)
    assert shown["ssh_settings"] == {"admin_username": "root", "ssh_port": server.port,
                                     "ssh_private_key_file": str(key)}
    assert shown["host_facts"]["python_version"].startswith("3.")
    # No byte of the private key anywhere in the workspace: only its path is kept.
    secret = "".join(line for line in key.read_text().splitlines() if not line.startswith("-----"))[120:180]
    holders = [str(p) for p in workspace.home.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert holders == []
    refused = workspace.cible("compute", "detach", "-n", "local", "-y", check=False)
    assert refused.returncode != 0 and "not an attached machine" in refused.stderr
    workspace.cible("compute", "detach", "-n", "box", "-y")
    assert workspace.cible("compute", "show", "-n", "box", check=False).returncode != 0


def test_attach_from_yaml_with_a_relative_key_and_errors_placed(workspace: Workspace,
                                                                  sshd: tuple[LoopbackSshd, Path]):
    server, key = sshd
    folder = key.parent
    good = write_yaml(folder, "vm.yml", f"""
        $schema: https://azuremlschemas.azureedge.net/latest/vmCompute.schema.json
        name: yaml-box
        type: virtualmachine
        resource_id: ssh://127.0.0.6:{server.port}
        ssh_settings:
          admin_username: root
          ssh_private_key_file: {key.name}
        """)
    attached = workspace.json("compute", "attach", "-f", good)
    assert attached["ssh_settings"]["ssh_private_key_file"] == str(key)  # taken from the YAML's folder
    typo = write_yaml(folder, "typo.yml", """
        name: typo-box
        type: virtualmachine
        resource_id: 127.0.0.6
        ssh_settings:
          admin_username: root
          admin_pasword: x
          ssh_private_key_file: id_ed25519
        """)
    proc = workspace.cible("compute", "attach", "-f", typo, check=False)
    assert proc.returncode != 0 and "typo.yml:6:" in proc.stderr and "admin_pasword" in proc.stderr
    password = workspace.cible("compute", "attach", "-n", "pw", "--host", "127.0.0.6", "--admin-username", "root",
                               "--admin-password", "hunter2", check=False)
    assert password.returncode != 0 and "SSH keys only" in password.stderr and "hunter2" not in password.stderr
