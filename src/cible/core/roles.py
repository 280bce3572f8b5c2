"""Workspace roles as Azure ML names them, the permissions each holds, and the permission each API route needs.

One table decides who may do what (docs/roles.md shows it): the server's auth middleware asks
`permission_for(method, path)` for every request a user's token makes, and `allows(role, permission)`.
A route the rules do not name needs a permission no role has: a new route is refused to users until it
is given one here (a test walks every route of the app).

Decisions:
- Roles are Azure ML's built-in ones: Owner, Contributor, Reader, AzureML Data Scientist and AzureML
  Compute Operator, with the same split: a Data Scientist runs jobs, registers assets and deploys
  endpoints on the computes there are, and may start and stop them; a Compute Operator makes and
  removes computes but submits no job; a Contributor does all but manage users; only an Owner
  manages users and approves quota requests.
- Everyone may read, and may manage their own tokens (`tokens/own`); a token of another user is `users/write`.
- Everyone may use the studio (`studio/use`): a studio session acts as the user who signed it in, with
  their role (studio/web.py checks each action as the API would).
- Agent and batch-runner routes are for node, pilot and run tokens (server/auth.py): no user role reaches them.
- Pure: no I/O.
"""

from __future__ import annotations

import re

OWNER, CONTRIBUTOR, READER = "Owner", "Contributor", "Reader"
DATA_SCIENTIST, COMPUTE_OPERATOR = "AzureML Data Scientist", "AzureML Compute Operator"
ROLES = (OWNER, CONTRIBUTOR, READER, DATA_SCIENTIST, COMPUTE_OPERATOR)

READS = ("workspace/read", "jobs/read", "assets/read", "computes/read", "quotas/read", "endpoints/read",
         "users/read")
PERMISSIONS = (*READS, "tokens/own", "jobs/write", "jobs/cancel", "assets/write", "computes/write",
               "computes/operate", "computes/credentials", "quotas/request", "quotas/write", "quotas/approve",
               "endpoints/write", "users/write", "studio/use")
_EVERYONE = (*READS, "tokens/own", "studio/use")
GRANTS: dict[str, frozenset[str]] = {
    OWNER: frozenset(PERMISSIONS),
    CONTRIBUTOR: frozenset(p for p in PERMISSIONS if p not in ("users/write", "quotas/approve")),
    READER: frozenset(_EVERYONE),
    DATA_SCIENTIST: frozenset((*_EVERYONE, "jobs/write", "jobs/cancel", "assets/write", "endpoints/write",
                               "computes/operate", "computes/credentials", "quotas/request")),
    COMPUTE_OPERATOR: frozenset((*_EVERYONE, "computes/write", "computes/operate", "computes/credentials",
                                 "quotas/request")),
}
ADMIN_ROLES = frozenset({OWNER})  # excepted from ownership (another user's instance, job, tokens)

# Short spellings a CLI user may type for a role ("data-scientist"), lower-cased.
_ALIASES = {"owner": OWNER, "contributor": CONTRIBUTOR, "reader": READER, "data-scientist": DATA_SCIENTIST,
            "datascientist": DATA_SCIENTIST, "compute-operator": COMPUTE_OPERATOR,
            "computeoperator": COMPUTE_OPERATOR, **{r.lower(): r for r in ROLES}}


def role_named(text: str) -> str | None:
    """The role `text` names (its Azure name or a short one, any case), or None."""
    return _ALIASES.get(" ".join(text.split()).lower())


def close_roles(text: str) -> list[str]:
    """The roles whose names `text` nearly spells ("data-scientst" -> AzureML Data Scientist)."""
    import difflib

    near = difflib.get_close_matches(" ".join(text.split()).lower(), list(_ALIASES), n=3, cutoff=0.7)
    return list(dict.fromkeys(_ALIASES[n] for n in near))


def route_said(method: str, path: str) -> str:
    """How a refusal names the request: uploads are named for what they are (a job's code or data)."""
    if re.fullmatch(UPLOADS, path.removeprefix("/api/v1/")):
        return f"uploading files (a job's code or an asset's data: {method} {path})"
    return f"{method} {path}"


def allows(role: str, permission: str) -> bool:
    return permission in GRANTS.get(role, frozenset())


def roles_with(permission: str) -> list[str]:
    return [r for r in ROLES if allows(r, permission)]


NODES_ONLY = "nodes-only"  # agent and batch-runner routes: node, pilot and run tokens, no user
UPLOADS = r"(blobs:missing|blobs/.+|snapshots)"

_READ = ("GET", "HEAD")
# (methods or None for any, pattern on the path after /api/v1/, permission): the first that matches decides.
_N = r"[^/:]+"  # one path segment (a name)
_RULES: tuple[tuple[tuple[str, ...] | None, re.Pattern[str], str], ...] = tuple(
    (methods, re.compile(pattern), permission) for methods, pattern, permission in (
        (None, r"agent/.*", NODES_ONLY),
        (None, rf"jobs/{_N}/batch(:.*|/.*)?", NODES_ONLY),
        (_READ, r"(health|sizes(/.+)?|costs)", "workspace/read"),
        (("POST",), r"studio:sign-in-code", "studio/use"),
        (None, UPLOADS, "assets/write"),  # a job's code, a data asset's files
        (("POST",), rf"jobs/{_N}:validate", "jobs/read"),
        (("POST",), rf"jobs/{_N}:cancel", "jobs/cancel"),
        (_READ, rf"jobs(/{_N}(/logs|/files(/.+)?)?)?", "jobs/read"),
        (None, rf"jobs(/{_N}(:archive|:restore)?)?", "jobs/write"),
        (_READ, r"computes(:usage|:providers)?", "computes/read"),
        (_READ, rf"computes/{_N}(/credentials|/nodes)?", "computes/read"),
        (("PUT", "DELETE"), rf"computes/{_N}/credentials/me", "computes/credentials"),
        (("POST",), rf"computes/{_N}:(start|stop|restart|snooze|terminal)", "computes/operate"),
        (None, rf"computes/{_N}(:replace-host-key|/nodes/{_N}:preempt)?", "computes/write"),
        (_READ, r"quotas", "quotas/read"),
        (("POST",), rf"quotas/{_N}/requests", "quotas/request"),
        (("PUT",), rf"quotas/{_N}", "quotas/write"),
        (("POST",), rf"quota-requests/{_N}:(approve|deny)", "quotas/approve"),
        (("POST",), rf"online-endpoints/{_N}/deployments/{_N}:recommend-size", "endpoints/read"),
        (_READ, r"(online|batch)-endpoints(/.*)?", "endpoints/read"),
        (None, r"(online|batch)-endpoints(/.*)?", "endpoints/write"),
        (_READ, rf"users(/{_N})?", "users/read"),
        (None, rf"users(/{_N})?", "users/write"),
        (None, rf"tokens(/{_N}:revoke)?", "tokens/own"),
        (_READ, rf"datastores(/{_N})?", "assets/read"),
        (("POST",), rf"datastores/{_N}/paths:upload", "assets/write"),  # files at a datastore path
        (_READ, r"(data|models|environments|components)(/.*)?", "assets/read"),
        (None, r"(data|models|environments|components)(/.*)?", "assets/write"),
    ))
_UNKNOWN = "undefined"  # no role has it: a route no rule names is refused to users


def permission_for(method: str, path: str) -> str:
    """The permission a user needs for `method` on `path` (/api/v1/… or /mlflow…); NODES_ONLY for agent
    and batch-runner routes; "undefined" (no role has it) for a path no rule names."""
    method = method.upper()
    if path == "/mlflow" or path.startswith("/mlflow/"):  # runs are jobs' records; MLflow searches with POST
        return "jobs/read" if method in _READ or path.endswith("/search") else "jobs/write"
    rest = path.removeprefix("/api/v1/")
    if rest == path:
        return _UNKNOWN
    for methods, pattern, permission in _RULES:
        if (methods is None or method in methods) and pattern.fullmatch(rest):
            return permission
    return _UNKNOWN
