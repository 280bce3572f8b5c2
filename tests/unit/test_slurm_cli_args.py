"""`cible compute attach --type slurm` and `set-credential` / `remove-credential`: what their flags
mean and which are refused before any request. No server: the compute operations stand in for the
server and record what the CLI asks of it (the CLI is what is under test here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cible.cli import computes
from cible.cli.main import app
from cible.sdk.resources import Done, Resource


class Recorded:
    """The compute operations the CLI calls, each call kept; every answer is what was sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def begin_create_or_update(self, entity: Any) -> Done:
        body = entity.model_dump(mode="json", exclude_none=True)
        self.calls.append(("create", body))
        return Done(Resource({**body, "partitions": ["debug"]}))

    def set_credential(self, name: str, username: str, key_file: str | None, *, use_ssh_agent: bool) -> Resource:
        self.calls.append(("set_credential", (name, username, key_file, use_ssh_agent)))
        return Resource({"compute": name, "user": "alice", "username": username})

    def remove_credential(self, name: str) -> None:
        self.calls.append(("remove_credential", name))

    def get(self, name: str) -> Resource:
        self.calls.append(("get", name))
        return Resource({"name": name, "type": "amlcompute"})


@pytest.fixture
def ops(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    recorded = Recorded()
    monkeypatch.setattr(computes, "_compute_ops", lambda: recorded)
    return recorded


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["compute", *args])
    said = result.output + (result.stderr if result.stderr_bytes is not None else "")
    return result.exit_code, " ".join(said.replace("│", " ").split())  # the words, out of rich's error box


def test_attach_without_a_host_uses_the_servers_own_slurm_commands(ops: Recorded):
    code, said = run("attach", "--type", "slurm", "--name", "hpc", "--partition", "debug", "--qos", "normal",
                     "--account", "ml", "--set", "cible.environment.SLURM_CONF=/etc/x/slurm.conf", "-o", "json")
    assert code == 0, said
    [(kind, body)] = ops.calls
    assert kind == "create"
    assert body == {"name": "hpc", "type": "slurm", "tags": {}, "partition": "debug", "qos": "normal",
                    "account": "ml", "cible": {"use_ssh_agent": False, "python": "python3",
                                               "environment": {"SLURM_CONF": "/etc/x/slurm.conf"},
                                               "keep_allocation_s": 60}}


def test_attach_with_a_host_logs_in_there_with_a_key_made_absolute(ops: Recorded, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    code, said = run("attach", "--type", "slurm", "--name", "hpc", "--host", "login.example.com", "--ssh-port",
                     "2222", "--admin-username", "alice", "--ssh-private-key-file", "keys/alice",
                     "--host-key-fingerprint", "SHA256:" + "A" * 43, "-o", "json")
    assert code == 0, said
    body = ops.calls[0][1]
    assert (body["login"], body["ssh_settings"]) == ("login.example.com", {
        "admin_username": "alice", "ssh_port": 2222, "ssh_private_key_file": str(tmp_path / "keys" / "alice")})
    assert body["cible"]["expected_host_key_fingerprint"] == "SHA256:" + "A" * 43
    assert "resource_id" not in body


def test_a_slurm_file_is_attached_as_written(ops: Recorded):
    example = Path(__file__).resolve().parents[2] / "examples" / "attached" / "slurm.yml"
    code, said = run("attach", "-f", str(example), "--partition", "short", "-o", "json")
    assert code == 0, said
    body = ops.calls[0][1]
    assert (body["type"], body["name"], body["partition"]) == ("slurm", "hpc", "short")


@pytest.mark.parametrize("args, words", [
    (("--type", "virtualmachine", "--host", "box", "--partition", "debug"),
     "--partition: only for a Slurm cluster (--type slurm)"),
    (("--type", "slurm", "--tunnel", "always"), "give cible.server_url instead"),
    (("--type", "slurm", "--admin-username", "alice", "--ssh-private-key-file", "/k"),
     "log in to a login host: give it with --host"),
    (("--type", "slurm", "--admin-password", "hunter2"), "never stores a password"),
    (("--type", "pbs",), "'pbs' cannot be attached here; attachable: virtualmachine, slurm"),
])
def test_attach_flags_that_do_not_fit_are_refused_before_any_request(ops: Recorded, args: tuple[str, ...],
                                                                     words: str):
    code, said = run("attach", "--name", "hpc", *args)
    assert code == 2 and words in said and "hunter2" not in said, said
    assert ops.calls == []


def test_set_credential_names_the_compute_either_way_and_sends_an_absolute_key(ops: Recorded, tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert run("set-credential", "hpc", "--username", "alice", "--ssh-private-key-file", "k", "-o", "json")[0] == 0
    assert run("set-credential", "-n", "hpc", "--username", "alice", "--use-ssh-agent", "-o", "json")[0] == 0
    assert ops.calls == [("set_credential", ("hpc", "alice", str(tmp_path / "k"), False)),
                         ("set_credential", ("hpc", "alice", None, True))]
    assert run("remove-credential", "hpc", "-o", "json")[0] == 0
    assert ops.calls[-1] == ("remove_credential", "hpc")


@pytest.mark.parametrize("args, words", [
    (("--username", "alice", "--ssh-private-key-file", "/k"), "name the compute"),
    (("hpc", "--ssh-private-key-file", "/k"), "give your user on the login host"),
    (("hpc", "--username", "alice"), "give a private key on the workspace server's machine, or --use-ssh-agent"),
    (("hpc", "--username", "alice", "--ssh-private-key-file", "/k", "--use-ssh-agent"), "not both"),
    (("hpc", "-n", "other", "--username", "alice", "--use-ssh-agent"), "two names: 'hpc' and --name 'other'"),
])
def test_set_credential_flags_that_do_not_fit_are_refused_before_any_request(ops: Recorded, args: tuple[str, ...],
                                                                             words: str):
    code, said = run("set-credential", *args)
    assert code == 2 and words in said, said
    assert ops.calls == []


def test_detach_refuses_what_attach_did_not_make(ops: Recorded):
    code, said = run("detach", "cpu", "--yes")
    assert code == 2 and "not an attached machine or cluster" in said, said
    assert ops.calls == [("get", "cpu")]
