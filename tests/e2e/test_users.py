"""Two users on one workspace, through the CLI and a real server: the local default needs no set-up (its
creator is its Owner); an Owner adds users and gives them tokens; with CIBLE_TOKEN the CLI acts as that
user, held to their role and to what is theirs (another's instance, another's job); a revoked token stops."""

from __future__ import annotations

import pytest
from e2e_support import Workspace, write_yaml


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    workspace = Workspace(tmp_path_factory.mktemp("users"))
    yield workspace
    workspace.stop()


def as_user(ws: Workspace, token: str, *args: str, check: bool = True):  # noqa: ANN201
    saved = dict(ws.env)
    ws.env["CIBLE_TOKEN"] = token
    try:
        return ws.cible(*args, check=check)
    finally:
        ws.env.clear()
        ws.env.update(saved)


def new_user(ws: Workspace, name: str, role: str) -> str:
    ws.cible("user", "create", "--name", name, "--role", role)
    return ws.json("token", "create", "--user", name, "--name", "e2e")["token"]


def test_the_local_default_needs_no_set_up_and_its_creator_is_its_owner(ws: Workspace) -> None:
    me = ws.json("user", "show")
    assert me["role"] == "Owner" and "users/write" in me["permissions"]


def test_two_users_are_held_to_their_roles_and_to_what_is_theirs(ws: Workspace) -> None:
    alice = new_user(ws, "alice", "data-scientist")
    bob = new_user(ws, "bob", "AzureML Data Scientist")
    reader = new_user(ws, "rita", "reader")
    assert "alice" in ws.cible("user", "list").stdout

    refused = as_user(ws, alice, "compute", "create", "-n", "alice-ci", "--type", "computeinstance", "--size",
                      "Standard_DS1_v2", check=False)  # a Data Scientist makes no compute
    assert refused.returncode != 0 and "lacks the permission computes/write" in refused.stderr, refused.stderr
    made = ws.cible("compute", "create", "-n", "alice-ci", "--type", "computeinstance", "--size", "Standard_DS1_v2",
                    "--user-object-id", "alice")
    assert made.returncode == 0
    job = write_yaml(ws.cwd, "on-ci.yml", "command: echo hi\ncompute: azureml:alice-ci\n")
    refused = as_user(ws, bob, "job", "create", "-f", job, "-n", "bob-on-alice", check=False)
    assert refused.returncode != 0 and "assigned to user 'alice'" in refused.stderr, refused.stderr
    refused = as_user(ws, bob, "compute", "stop", "-n", "alice-ci", check=False)
    assert refused.returncode != 0 and "assigned to user 'alice'" in refused.stderr, refused.stderr

    local = write_yaml(ws.cwd, "local.yml", "command: sleep 30\ncompute: local\n")
    assert as_user(ws, alice, "job", "create", "-f", local, "-n", "alices-job").returncode == 0
    refused = as_user(ws, bob, "job", "cancel", "-n", "alices-job", check=False)
    assert refused.returncode != 0 and "submitted by 'alice'" in refused.stderr, refused.stderr
    mine = as_user(ws, alice, "job", "list", "--mine", "-o", "json").stdout
    assert "alices-job" in mine and "bob" not in mine

    refused = as_user(ws, reader, "job", "create", "-f", local, "-n", "ritas-job", check=False)
    assert refused.returncode != 0 and "lacks the permission jobs/write" in refused.stderr, refused.stderr
    assert "alices-job" in as_user(ws, reader, "job", "list").stdout  # a Reader sees
    refused = as_user(ws, alice, "quota", "approve", "1", check=False)
    assert refused.returncode != 0 and "quotas/approve" in refused.stderr

    assert as_user(ws, alice, "job", "cancel", "-n", "alices-job").returncode == 0  # her own


def test_a_revoked_token_stops_at_once(ws: Workspace) -> None:
    token = new_user(ws, "carl", "reader")
    assert as_user(ws, token, "job", "list").returncode == 0
    token_id = ws.json("token", "list", "--user", "carl")[0]["id"]
    ws.cible("token", "revoke", token_id)
    refused = as_user(ws, token, "job", "list", check=False)
    assert refused.returncode != 0 and "token" in refused.stderr.lower(), refused.stderr
