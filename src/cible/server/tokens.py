"""Scoped tokens: what a job and a node's agent may do, derived from the workspace token.

The workspace token (``$CIBLE_HOME/token``) can do everything; nothing that runs user code gets it.
Each job gets a *run token* and each node's agent a *node token*:

    cible-job.<name, base64url>.<salt>.<HMAC>  its own MLflow runs (see tracking_policy)
    cible-node.<node id, base64url>.<HMAC>     the agent routes of that node only

A job's salt is drawn when it is submitted (its plan's `token_salt`): a job deleted and submitted
again under its name gets another token, and the proxy refuses a token whose salt is not the
current job's, or whose job ended a while ago.

The HMAC key is derived from the workspace token, so a token is never stored anywhere: the
server recomputes it after a restart (an agent keeps working across one), a forged or altered
token fails the compare, and a new workspace token revokes every scoped token at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

JOB = "job"
NODE = "node"
PILOT = "pilot"
_PREFIX = "cible-"


@dataclass(frozen=True)
class Scope:
    """Who a request acts as: the workspace (everything), one job's run, one node's agent, or a user
    (their personal token: what their role allows, cible.core.roles)."""

    kind: Literal["workspace", "job", "node", "pilot", "user"]
    name: str = ""
    salt: str = ""  # a job's: which submission of that name; a pilot's: which attempt
    role: str = ""  # a user's (cible.core.roles)

    @property
    def is_workspace(self) -> bool:
        return self.kind == "workspace"


WORKSPACE = Scope("workspace")


def pilot_salt(submission: str, attempt: int) -> str:
    return f"{submission}-{attempt}"


class Tokens:
    def __init__(self, workspace_token: str) -> None:
        self._workspace = workspace_token.encode()
        self._key = hmac.new(self._workspace, b"cible scoped tokens v1", hashlib.sha256).digest()

    def job(self, name: str, salt: str = "") -> str:
        """The run token of job `name` as submitted with `salt` (what its launcher and command hold)."""
        return self._make(JOB, name, salt)

    def run(self, plan: dict) -> str:
        """The run token of the job a launch plan is for."""
        return self.job(plan["job_name"], plan.get("token_salt", ""))

    def node(self, node_id: str) -> str:
        """The token of node `node_id`'s agent."""
        return self._make(NODE, node_id)

    def pilot(self, job_name: str, attempt: int, submission: str = "") -> str:
        """The token of the pilots of attempt `attempt` of job `job_name` as submitted with `submission`
        (its plan's token_salt) on a Slurm cluster: the agent routes of that job's pilot nodes only
        (their ids are Slurm's, known once it started). Its salt, `<submission>-<attempt>`, is checked
        against the job's current attempt (AgentService.check_pilot): an old token of a job of the
        same name, or of an earlier attempt, reaches nothing."""
        return self._make(PILOT, job_name, pilot_salt(submission, attempt))

    def scope_of(self, bearer: bytes) -> Scope | None:
        """The scope a bearer token grants, or None for a token this workspace did not issue."""
        if hmac.compare_digest(bearer, self._workspace):
            return WORKSPACE
        try:
            text = bearer.decode("ascii")
            kind_part, encoded, *salt, _mac = text.split(".")
            kind = kind_part.removeprefix(_PREFIX)
            name = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
        except (UnicodeDecodeError, ValueError, binascii.Error):
            return None
        if (kind, len(salt)) not in ((JOB, 1), (NODE, 0), (PILOT, 1)):
            return None
        if not hmac.compare_digest(text, self._make(kind, name, *salt)):
            return None
        return Scope(kind, name, *salt)

    def endpoint_key(self, endpoint: str, which: str, salt: str) -> str:
        """An online endpoint's primary or secondary key (`auth_mode: key`), of the generation `salt`
        names: regenerating a key draws a new salt. Not a scoped token of the API: the gateway
        checks it, the API refuses it."""
        mac = hmac.new(self._key, "\0".join(["endpoint-key", endpoint, which, salt]).encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")

    def endpoint_token(self, endpoint: str, salt: str, expires: int) -> str:
        """An `aml_token` for an endpoint, valid until `expires` (Unix seconds): its expiry and an HMAC."""
        mac = hmac.new(self._key, "\0".join(["endpoint-token", endpoint, salt, str(expires)]).encode(), hashlib.sha256)
        return f"{expires}.{base64.urlsafe_b64encode(mac.digest()).decode().rstrip('=')}"

    def token_expiry(self, endpoint: str, salt: str, token: str) -> int | None:
        """When an endpoint token made by `endpoint_token` expires, or None when this workspace did not make it."""
        expires, _, _mac = token.partition(".")
        if not (expires.isascii() and expires.isdigit()) or len(expires) > 12:
            return None
        return int(expires) if hmac.compare_digest(token, self.endpoint_token(endpoint, salt, int(expires))) else None

    def _make(self, kind: str, name: str, salt: str | None = None) -> str:
        encoded = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
        parts = [encoded] if salt is None else [encoded, salt]
        mac = hmac.new(self._key, "\0".join([kind, *parts]).encode(), hashlib.sha256).digest()
        return f"{_PREFIX}{kind}.{'.'.join(parts)}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
